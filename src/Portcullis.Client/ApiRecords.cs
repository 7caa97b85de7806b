namespace Portcullis.Client;

// The request and response bodies of Portcullis's API, as the server writes and reads them (snake_case JSON, see
// PortcullisClient.Json): the server binds and answers these very records, and the CLI and other .NET callers send and
// read them. Request properties are nullable, without defaults: the server says what is missing rather than failing to
// bind, and a caller names every property it leaves out.

// --- Who a credential is -------------------------------------------------------------------------------------------

/// <summary>Who a credential belongs to (<c>GET /api/v1/me</c>).</summary>
public sealed record MeResponse(string Username, bool Admin, MeAuth Auth);

/// <summary>The credential itself: its kind, the token or client it is, and the scopes it carries now.</summary>
public sealed record MeAuth(string Kind, string? TokenId, string[] Scopes, string? ClientId);

// --- API tokens ----------------------------------------------------------------------------------------------------

/// <summary>
/// <c>POST /api/v1/tokens</c>: a name, and optionally a description, a lifetime (<see cref="ExpiresInDays"/> or an
/// <see cref="ExpiresAt"/> date), scopes, for admins the owner, and the token's policies (docs/token-policies.md).
/// </summary>
public sealed record CreateTokenRequest(
    string? Name,
    string? Description,
    long? ExpiresInDays,
    string? ExpiresAt,
    string[]? Scopes,
    string? Owner,
    long? MaxUses,
    string[]? AllowedCidrs,
    TokenRateLimit? RateLimit,
    string? Deliver,
    long? LinkExpiresInMinutes);

/// <summary>How fast a token may be used: requests per second and per minute, either or both (docs/token-policies.md).</summary>
public sealed record TokenRateLimit(long? PerSecond, long? PerMinute);

/// <summary><c>POST /api/v1/tokens/{id}/rotate</c>: how long the old token keeps working (0 by default).</summary>
public sealed record RotateTokenRequest(long? GraceSeconds);

/// <summary>
/// The only response that ever carries a token's secret (<see cref="Token"/>); sent with <c>Cache-Control: no-store</c>.
/// A token delivered as a link has <see cref="ClaimUrl"/> instead, which reveals it once (docs/token-policies.md).
/// </summary>
public sealed record CreatedTokenResponse(
    long Id,
    string Name,
    string? Description,
    string? Token,
    string TokenHint,
    string[] Scopes,
    DateTime CreatedAt,
    DateTime? ExpiresAt,
    string Owner,
    long? MaxUses = null,
    string[]? AllowedCidrs = null,
    TokenRateLimit? RateLimit = null,
    string? ClaimUrl = null,
    DateTime? LinkExpiresAt = null);

/// <summary>An API token as listed: never its secret.</summary>
public sealed record TokenResponse(
    long Id,
    string Name,
    string? Description,
    string TokenHint,
    string[] Scopes,
    DateTime CreatedAt,
    DateTime? ExpiresAt,
    DateTime? LastUsedAt,
    string? LastUsedIp,
    string Status,
    string Owner,
    long? ReplacedById,
    long? MaxUses = null,
    long Uses = 0,
    string[]? AllowedCidrs = null,
    TokenRateLimit? RateLimit = null,
    TokenLinkResponse? Link = null);

/// <summary><c>POST /api/v1/webhooks</c>: where to send which events about the caller's own tokens (docs/notifications.md).</summary>
public sealed record CreateWebhookRequest(string? Url, string[]? Events);

/// <summary>A person's webhook; <see cref="Secret"/> (which signs its deliveries) only in the answer that created it.</summary>
public sealed record WebhookResponse(long Id, string Url, string[] Events, string SecretHint, DateTime CreatedAt, string? Secret = null);

/// <summary>One event on its way to one webhook: delivered, pending (with its next attempt) or failed.</summary>
public sealed record WebhookDeliveryResponse(string DeliveryId, string Event, string Target, string Status, int Attempts, DateTime CreatedAt,
    DateTime? DeliveredAt, DateTime? NextAttemptAt, int? LastStatus, string? LastError, bool Configured);

/// <summary>A token handed over as a one-time link: until when the link works, and whether (when, from where) it was opened.</summary>
public sealed record TokenLinkResponse(DateTime ExpiresAt, DateTime? ClaimedAt, string? ClaimedFrom);

public sealed record UsageDay(string Date, long Count);

/// <summary>
/// <c>GET /api/v1/tokens/{id}/suggested-scopes</c>: the scopes the token's requests relied on in the last <see cref="Days"/>
/// days, and the narrowest scopes that cover them (<see cref="Narrower"/> when those are fewer than it has).
/// </summary>
public sealed record SuggestedScopesResponse(long TokenId, int Days, string[] Scopes, ScopeUse[] Used, string[] Suggested, bool Narrower);

/// <summary>One scope a token relied on: how many requests, and the last UTC day one did.</summary>
public sealed record ScopeUse(string Scope, long Requests, string LastUsedOn);

/// <summary><c>POST /api/v1/tokens/{id}/narrow</c>: the scopes to keep, or none for what it used.</summary>
public sealed record NarrowTokenRequest(string[]? Scopes);

/// <summary><c>GET /api/v1/tokens/{id}/usage</c>: requests per day.</summary>
public sealed record TokenUsageResponse(long TokenId, int Days, long Total, UsageDay[] Usage);

// --- Users ---------------------------------------------------------------------------------------------------------

public sealed record CreateUserRequest(string? Username, string? Password, bool? Admin);

/// <summary><c>PATCH /api/v1/users/{username}</c>: only what is given changes.</summary>
public sealed record UpdateUserRequest(bool? Admin, bool? Disabled, string? Password);

/// <param name="Source">Where the account comes from: <c>local</c>, or <c>oidc:NAME</c> for a person who logs in through that OpenID Provider.</param>
public sealed record UserResponse(string Username, string Kind, bool Admin, bool Disabled, DateTime CreatedAt, DateTime UpdatedAt, string Source = "local");

// --- OAuth clients -------------------------------------------------------------------------------------------------

public sealed record CreateClientRequest(string? Name, string[]? Scopes);

/// <summary>The only response that carries a client secret; sent with <c>Cache-Control: no-store</c>.</summary>
public sealed record ClientSecretResponse(
    string ClientId,
    string ClientSecret,
    string Name,
    string[] Scopes,
    string Owner,
    string SecretHint,
    DateTime CreatedAt,
    DateTime SecretCreatedAt);

public sealed record ClientResponse(
    string ClientId,
    string Name,
    string[] Scopes,
    string Owner,
    string SecretHint,
    string SecretStatus,
    DateTime CreatedAt,
    DateTime SecretCreatedAt);

// --- Services behind the gateway -----------------------------------------------------------------------------------

/// <summary><c>POST /api/v1/services</c>: one upstream, or several replicas in <see cref="Upstreams"/>.</summary>
public sealed record RegisterServiceRequest(string? Name, string? Version, string? Upstream, string[]? Upstreams, bool? Protected, string? Description,
    HealthCheckRequest? HealthCheck);

/// <summary>An active health check: <c>GET path</c> on every replica each <c>interval_seconds</c> (default 10).</summary>
public sealed record HealthCheckRequest(string? Path, int? IntervalSeconds);

/// <summary>
/// A service as listed. Upstreams are internal addresses: only admins see them (<see cref="Upstream"/> is empty for
/// others), and the replicas' health in <see cref="Destinations"/>.
/// </summary>
public sealed record ServiceResponse(string Name, string Version, string Upstream, string[] Upstreams, bool Protected, string? Description, string Source,
    string Path, string Origin, DateTime RegisteredAt, HealthCheckRequest? HealthCheck, DestinationResponse[]? Destinations);

/// <summary>One replica and its health as the gateway sees it: <c>healthy</c>, <c>unhealthy</c> or <c>unknown</c> (not probed, no failures).</summary>
public sealed record DestinationResponse(string Address, string Health);

// --- Signing keys --------------------------------------------------------------------------------------------------

/// <summary>A JWT signing key's metadata (never its material): <c>signing</c>, <c>verifying</c> or <c>retired</c>.</summary>
public sealed record SigningKeyResponse(string Kid, string Alg, DateTime CreatedAt, DateTime? RetiredAt, string Status);

/// <summary><c>POST /api/v1/keys/rotate</c>: the new signing key, and every key now.</summary>
public sealed record KeyRotationResponse(string Kid, SigningKeyResponse[] Keys);

// --- Device login ----------------------------------------------------------------------------------------------------

/// <summary>
/// <c>POST /auth/device</c> (RFC 8628 §3.2): the device code the program keeps and polls with, and the user code a person
/// enters at <see cref="VerificationUri"/> (or confirms at <see cref="VerificationUriComplete"/>).
/// </summary>
public sealed record DeviceAuthorizationResponse(string DeviceCode, string UserCode, string VerificationUri, string VerificationUriComplete, int ExpiresIn,
    int Interval);
