using System.Globalization;
using System.Net;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Users;

namespace Portcullis.Tokens;

/// <summary>Personal and service API tokens: <c>/api/v1/tokens</c> (docs/decisions.md).</summary>
internal static class TokensApi
{
    /// <summary>API tokens: their format, the cache that answers most requests, and the usage recorder.</summary>
    public static IServiceCollection AddTokens(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<TokenOptions>().Bind(configuration.GetSection(TokenOptions.Section)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<TokenOptions>, TokenOptionsValidator>();
        services.AddSingleton(sp => new TokenFormat(sp.GetRequiredService<IOptions<TokenOptions>>().Value.Prefix));
        services.AddSingleton<TokenCache>();
        services.AddSingleton<TokenRateLimiter>();
        services.AddSingleton<UsageRecorder>();
        services.AddHostedService(sp => sp.GetRequiredService<UsageRecorder>());
        return services;
    }

    public const int MaxNameLength = 100;
    public const int MaxDescriptionLength = 1000;

    /// <summary>The largest use limit a token may have (docs/token-policies.md).</summary>
    public const long MaxUsesLimit = 1_000_000_000;

    /// <summary>The highest rates a token's rate limit may allow (docs/token-policies.md).</summary>
    public const long MaxPerSecond = 100_000;
    public const long MaxPerMinute = 6_000_000;

    public static RouteGroupBuilder MapTokens(this RouteGroupBuilder api)
    {
        var group = api.MapGroup("/tokens").WithTags("Tokens");
        group.MapPost("/", CreateAsync).NotForClientCredentials()
            .Answers((StatusCodes.Status409Conflict, "The owner already has an active token of that name."));
        group.MapGet("/", ListAsync);
        group.MapGet("/{id:long}", GetAsync);
        group.MapDelete("/{id:long}", RevokeAsync);
        group.MapPost("/{id:long}/rotate", RotateAsync).NotForClientCredentials()
            .Answers((StatusCodes.Status409Conflict, "The token was already rotated or has ended."));
        group.MapGet("/{id:long}/usage", UsageAsync);
        group.MapTokenNarrowing();
        return group;
    }

    private static async Task<Results<Created<CreatedTokenResponse>, ProblemHttpResult>> CreateAsync(
        CreateTokenRequest? request, HttpContext http, PortcullisDb db, TokenFormat format, AuditLog audit, InvalidationBus invalidation,
        IOptions<TokenOptions> options, TimeProvider time, CancellationToken cancellationToken)
    {
        if (request is null)
            return ProblemResponses.BadRequest("Send a JSON body such as {\"name\": \"ci\", \"expires_in_days\": 30}.");
        return (await IssueAsync(request, http, db, format, audit, invalidation, options.Value, time, cancellationToken))
            .AsCreatedSecret(http, t => $"/api/v1/tokens/{t.Id}");
    }

    /// <summary>
    /// Creates a token for the caller of <paramref name="http"/> (or, for an admin, for <see cref="CreateTokenRequest.Owner"/>):
    /// the rules of docs/decisions.md ("API tokens"), then the token and its audit event in one transaction. The API and the web UI both come here.
    /// </summary>
    internal static async Task<Checked<CreatedTokenResponse>> IssueAsync(
        CreateTokenRequest request, HttpContext http, PortcullisDb db, TokenFormat format, AuditLog audit, InvalidationBus invalidation,
        TokenOptions options, TimeProvider time, CancellationToken cancellationToken)
    {
        var caller = http.Credential();
        var now = time.GetUtcNow().UtcDateTime;

        if ((ValidateName(request.Name) ?? ValidateDescription(request.Description)) is { } invalid)
            return invalid;
        var (expiresAt, expiryError) = ResolveExpiry(request.ExpiresInDays, request.ExpiresAt, options, now);
        if (expiryError is not null)
            return expiryError;
        if (request.MaxUses is < 1 or > MaxUsesLimit)
            return new RuleError("max_uses", $"max_uses must be between 1 and {MaxUsesLimit}, or left out for no limit.");
        var (allowedFrom, sourcesError) = AllowedFromOf(request.AllowedCidrs, caller);
        if (sourcesError is not null)
            return sourcesError;
        var (rateLimit, rateError) = RateLimitOf(request.RateLimit, caller);
        if (rateError is not null)
            return rateError;
        var (linkLifetime, linkError) = TokenLinks.LifetimeOf(request);
        if (linkError is not null)
            return linkError;
        var linkEnds = now + linkLifetime;
        if (linkEnds > expiresAt)
            return new RuleError("link_expires_in_minutes", "The link would outlive the token: give it a shorter life, or the token a longer one.");

        var (owner, ownerError) = await ResolveOwnerAsync(request.Owner, http, db, cancellationToken);
        if (ownerError is not null)
            return ownerError;

        ScopeSet scopes;
        if (request.Scopes is null)
            scopes = ScopeSet.ApiAndServices;
        else if (!ScopeSet.TryParse(request.Scopes, out scopes, out var scopeError))
            return new RuleError("scopes", scopeError!);
        if (scopes.IsEmpty)
            return new RuleError("scopes", "A token needs at least one scope, e.g. [\"api\"] or [\"services\"].");
        // Nobody mints more than they have: the caller's credential, and the owner's own rights, bound the new token.
        var ownerRights = PrincipalCache.ToState(owner!, 0).Rights;
        if (!scopes.IsSubsetOf(caller.Effective) || !scopes.IsSubsetOf(ownerRights))
        {
            var allowed = caller.Effective.Intersect(ownerRights);
            return new RuleError("scopes",
                $"The requested scopes '{scopes}' exceed what {(owner!.Id == caller.Owner.Id ? "you" : $"'{owner.Username}'")} may hold with this credential: '{allowed}'.");
        }

        caller.ExerciseAll(scopes, http);
        var name = request.Name!.Trim();
        if (await NameTakenAsync(db, owner!.Id, name, now, cancellationToken))
            return RuleError.Conflict("name", $"'{owner.Username}' already has an active token named '{name}'. Choose another name, or revoke the old token first.");

        var kind = owner.Kind == PrincipalKind.Service ? TokenKind.Service : TokenKind.Personal;
        var plaintext = format.Generate(kind);
        var token = new ApiToken
        {
            OwnerId = owner.Id,
            Name = name,
            Description = string.IsNullOrWhiteSpace(request.Description) ? null : request.Description.Trim(),
            TokenHash = TokenFormat.Digest(plaintext).ToHex(),
            Hint = format.Hint(plaintext),
            Scopes = scopes.ToString(),
            CreatedAt = now,
            CreatedBy = caller.Owner.Name,
            ExpiresAt = expiresAt,
            MaxUses = request.MaxUses,
            AllowedCidrs = allowedFrom is null ? null : AllowedSources.ToStored(allowedFrom),
            RatePerSecond = rateLimit?.PerSecond,
            RatePerMinute = rateLimit?.PerMinute,
            // Handed over as a link: it ends with the link unless someone opens it first (Tokens/TokenLinks.cs).
            RevokedAt = linkEnds,
        };
        string? claimUrl = null;
        // The token, its link and its audit event commit together (the event needs the token's id).
        await using (var tx = await db.Database.BeginTransactionAsync(cancellationToken))
        {
            db.ApiTokens.Add(token);
            await db.SaveChangesAsync(cancellationToken);
            if (linkEnds is { } ends)
                claimUrl = TokenLinks.Add(db, http, token, plaintext, now, ends);
            db.AuditEvents.Add(audit.Create(http, AuditEvents.TokenCreated, owner.Username, owner.Id, token.Id.ToString(CultureInfo.InvariantCulture),
                new { name, hint = token.Hint, scopes = token.Scopes, expires_at = expiresAt, max_uses = token.MaxUses,
                    allowed_cidrs = AllowedSources.ToNames(token.AllowedCidrs), rate_limit = token.RateLimit, link_expires_at = linkEnds }));
            await db.SaveChangesAsync(cancellationToken);
            await tx.CommitAsync(cancellationToken);
        }
        await invalidation.TokenCreatedAsync(token.TokenHash, cancellationToken);

        var created = CreatedTokenResponse.From(token, plaintext, owner.Username);
        return claimUrl is null ? created : created with { Token = null, ClaimUrl = claimUrl, LinkExpiresAt = linkEnds };
    }

    /// <summary>
    /// How fast the new token may be used: the limits asked for, or none. A rate-limited credential makes no tokens at all:
    /// each would have buckets of its own, and a line of them would add up to any rate (docs/token-policies.md).
    /// </summary>
    private static Checked<TokenRateLimit> RateLimitOf(TokenRateLimit? requested, Credential caller)
    {
        if (caller.RateLimit is not null)
            return RuleError.Forbidden("rate_limit",
                "This token has a rate limit, and tokens it made would each have a rate of their own. Create tokens with a credential without one.");
        switch (requested)
        {
            case null:
                return new Checked<TokenRateLimit>(null, null);
            case { PerSecond: null, PerMinute: null }:
                return new RuleError("rate_limit", "rate_limit needs per_second, per_minute or both, e.g. {\"per_second\": 10}; leave it out for no limit.");
            case { PerSecond: < 1 or > MaxPerSecond }:
                return new RuleError("rate_limit", $"rate_limit.per_second must be between 1 and {MaxPerSecond}.");
            case { PerMinute: < 1 or > MaxPerMinute }:
                return new RuleError("rate_limit", $"rate_limit.per_minute must be between 1 and {MaxPerMinute}.");
        }
        return requested;
    }

    /// <summary>Whether <paramref name="limit"/> allows no more than <paramref name="bound"/>: every rate the bound sets, it sets no higher.</summary>
    private static bool WithinRate(TokenRateLimit? limit, TokenRateLimit bound)
    {
        return !Looser(limit?.PerSecond, bound.PerSecond) && !Looser(limit?.PerMinute, bound.PerMinute);

        static bool Looser(long? rate, long? boundRate) => boundRate is { } b && (rate is null || rate > b);
    }

    /// <summary>
    /// Where the new token may be used from: the ranges asked for, which a credential limited to some ranges may only
    /// narrow; asked for none, it gets the ranges of the credential that made it (docs/token-policies.md).
    /// </summary>
    private static Checked<IPNetwork[]> AllowedFromOf(string[]? requested, Credential caller)
    {
        if (requested is null)
            return new Checked<IPNetwork[]>(caller.AllowedNetworks, null);
        var (networks, error) = AllowedSources.Parse(requested);
        if (error is not null)
            return error;
        if (caller.AllowedNetworks is { } limit && !AllowedSources.Within(networks!, limit))
            return RuleError.Forbidden(AllowedSources.Field,
                $"This credential may only be used from {string.Join(", ", limit.Select(n => n.ToString()))}; a token it makes cannot be allowed anywhere else.");
        return networks!;
    }

    private static async Task<Results<Ok<TokenResponse[]>, ProblemHttpResult>> ListAsync(
        HttpContext http, PortcullisDb db, TimeProvider time, string? owner, bool? all, CancellationToken cancellationToken)
    {
        var caller = http.Credential();
        var everyone = all == true || owner is not null;
        if (everyone && !caller.Exercise(ScopeRequirement.Admin, http))
            return ProblemResponses.Forbidden("Only admins may list other principals' tokens ('owner' or 'all').");
        var now = time.GetUtcNow().UtcDateTime;
        return TypedResults.Ok(everyone ? await ListAllAsync(db, now, owner, cancellationToken) : await ListOwnedByAsync(db, now, caller.Owner.Id, cancellationToken));
    }

    /// <summary>Every token, or those of the principal named <paramref name="owner"/>; newest first.</summary>
    internal static Task<TokenResponse[]> ListAllAsync(PortcullisDb db, DateTime now, string? owner, CancellationToken cancellationToken)
    {
        var owners = db.Users.AsNoTracking();
        if (owner is not null)
        {
            var normalized = User.Normalize(owner);
            owners = owners.Where(u => u.NormalizedUsername == normalized);
        }
        return DescribeAsync(db.ApiTokens.AsNoTracking(), owners, now, cancellationToken);
    }

    /// <summary>The tokens of one principal, newest first.</summary>
    internal static Task<TokenResponse[]> ListOwnedByAsync(PortcullisDb db, DateTime now, long ownerId, CancellationToken cancellationToken) =>
        DescribeAsync(db.ApiTokens.AsNoTracking().Where(t => t.OwnerId == ownerId), db.Users.AsNoTracking(), now, cancellationToken);

    private static async Task<TokenResponse[]> DescribeAsync(IQueryable<ApiToken> tokens, IQueryable<User> owners, DateTime now, CancellationToken cancellationToken)
    {
        var rows = await tokens.Join(owners, t => t.OwnerId, u => u.Id, (t, u) => new { Token = t, Owner = u.Username })
            .OrderByDescending(x => x.Token.Id).ToListAsync(cancellationToken);
        return rows.Select(x => TokenResponse.From(x.Token, x.Owner, now)).ToArray();
    }

    private static async Task<Results<Ok<TokenResponse>, ProblemHttpResult>> GetAsync(
        long id, HttpContext http, PortcullisDb db, TimeProvider time, CancellationToken cancellationToken) =>
        await FindAsync(id, http, db, time.GetUtcNow().UtcDateTime, cancellationToken) is { } token ? TypedResults.Ok(token) : NotFound(id);

    /// <summary>The token <paramref name="id"/> if the caller may see it (its owner, or an admin); otherwise null.</summary>
    internal static async Task<TokenResponse?> FindAsync(long id, HttpContext http, PortcullisDb db, DateTime now, CancellationToken cancellationToken) =>
        await FindVisibleAsync(id, http, db, cancellationToken) is ({ } token, { } owner) ? await DescribeAsync(token, owner, db, now, cancellationToken) : null;

    /// <summary>A token as <c>GET /api/v1/tokens/{id}</c> shows it, with the state of its one-time link if it was handed over by one.</summary>
    internal static async Task<TokenResponse> DescribeAsync(ApiToken token, string owner, PortcullisDb db, DateTime now, CancellationToken cancellationToken) =>
        TokenResponse.From(token, owner, now) with { Link = await TokenLinks.StateAsync(db, token.Id, cancellationToken) };

    private static async Task<Results<NoContent, ProblemHttpResult>> RevokeAsync(
        long id, HttpContext http, PortcullisDb db, AuditLog audit, InvalidationBus invalidation, TimeProvider time, CancellationToken cancellationToken) =>
        await RevokeVisibleAsync(id, http, db, audit, invalidation, time, cancellationToken) is null ? NotFound(id) : TypedResults.NoContent();

    /// <summary>Revokes the token <paramref name="id"/> if the caller may see it, and says which token that was; null if none.</summary>
    internal static async Task<TokenResponse?> RevokeVisibleAsync(
        long id, HttpContext http, PortcullisDb db, AuditLog audit, InvalidationBus invalidation, TimeProvider time, CancellationToken cancellationToken)
    {
        var found = await FindVisibleAsync(id, http, db, cancellationToken, tracked: true);
        if (found is null)
            return null;
        var (token, owner) = found.Value;
        var now = time.GetUtcNow().UtcDateTime;
        if (token.RevokedAt is null || token.RevokedAt > now)
        {
            token.RevokedAt = now;
            db.AuditEvents.Add(audit.Create(http, AuditEvents.TokenRevoked, owner, token.OwnerId, token.Id.ToString(CultureInfo.InvariantCulture),
                new { name = token.Name, hint = token.Hint }));
            await db.SaveChangesAsync(cancellationToken);
        }
        await invalidation.TokenChangedAsync(token.TokenHash, cancellationToken);
        return TokenResponse.From(token, owner, now);
    }

    private static async Task<Results<Ok<CreatedTokenResponse>, ProblemHttpResult>> RotateAsync(
        long id, RotateTokenRequest? request, HttpContext http, PortcullisDb db, TokenFormat format, AuditLog audit,
        InvalidationBus invalidation, IOptions<TokenOptions> options, TimeProvider time, CancellationToken cancellationToken)
    {
        var grace = request?.GraceSeconds ?? 0;
        if (grace < 0 || grace > options.Value.MaxRotationGrace.TotalSeconds)
            return ProblemResponses.BadRequest($"grace_seconds must be between 0 and {(long)options.Value.MaxRotationGrace.TotalSeconds}.");
        var caller = http.Credential();
        var found = await FindVisibleAsync(id, http, db, cancellationToken);
        if (found is null)
            return NotFound(id);
        var (old, owner) = found.Value;
        var now = time.GetUtcNow().UtcDateTime;
        if (old.ReplacedById is { } successor)
            return ProblemResponses.Conflict($"Token {id} was already rotated; its successor is token {successor}.");
        if (old.RevokedAt is { } revokedAt && revokedAt <= now)
            return ProblemResponses.Conflict($"Token {id} is revoked and cannot be rotated. Create a new token instead.");
        if (await TokenLinks.IsPendingAsync(db, id, cancellationToken))
            return ProblemResponses.Conflict($"Token {id} waits for its link to be opened and cannot be rotated; revoke it and hand over a new one instead.");
        // A use limit is not renewed by rotating: the successor has the uses that are left (docs/token-policies.md).
        if (old.MaxUses is { } maxUses && old.Uses >= maxUses)
            return ProblemResponses.Conflict($"Token {id} is spent (used {old.Uses} of {maxUses} times) and cannot be rotated. Create a new token instead.");
        // The successor may not carry more than the caller could mint today.
        var ownerRow = await db.Users.AsNoTracking().FirstAsync(u => u.Id == old.OwnerId, cancellationToken);
        var scopes = ScopeSet.Parse(old.Scopes);
        if (!scopes.IsSubsetOf(caller.Effective) || !scopes.IsSubsetOf(PrincipalCache.ToState(ownerRow, 0).Rights))
            return ProblemResponses.BadRequest($"The token's scopes '{scopes}' exceed what this credential may mint now; create a new token with fewer scopes.");
        caller.ExerciseAll(scopes, http);
        if (caller.AllowedNetworks is { } limit && (AllowedSources.FromStored(old.AllowedCidrs) is not { } kept || !AllowedSources.Within(kept, limit)))
            return ProblemResponses.Forbidden($"Token {id} may be used from addresses this credential may not: rotate it with a credential that is not limited to addresses.");
        if (caller.RateLimit is { } rateBound && !WithinRate(old.RateLimit, rateBound))
            return ProblemResponses.Forbidden($"Token {id} may be used faster than this credential: rotate it with a credential without a rate limit.");

        // Same lifetime as the original, counted from now (never-expiring stays never-expiring), within
        // Tokens:MaxLifetimeDays like every credential made today: a rotation must not extend past the cap.
        DateTime? expiresAt = old.ExpiresAt is { } e ? now + (e - old.CreatedAt) : null;
        if (options.Value.MaxLifetimeDays is { } maxDays && (expiresAt is null || expiresAt > now.AddDays(maxDays)))
            expiresAt = now.AddDays(maxDays);
        var plaintext = format.Generate(ownerRow.Kind == PrincipalKind.Service ? TokenKind.Service : TokenKind.Personal);
        var successorToken = new ApiToken
        {
            OwnerId = old.OwnerId,
            Name = old.Name,
            Description = old.Description,
            TokenHash = TokenFormat.Digest(plaintext).ToHex(),
            Hint = format.Hint(plaintext),
            Scopes = old.Scopes,
            CreatedAt = now,
            CreatedBy = caller.Owner.Name,
            ExpiresAt = expiresAt,
            MaxUses = old.MaxUses - old.Uses,
            AllowedCidrs = old.AllowedCidrs,
            RatePerSecond = old.RatePerSecond,
            RatePerMinute = old.RatePerMinute,
            // Rotating does not refill the buckets: the successor draws from its predecessor's.
            RateBucket = old.RatePerSecond is null && old.RatePerMinute is null ? null : old.RateBucket ?? old.Id,
        };
        var oldEnds = now.AddSeconds(grace);
        if (old.ExpiresAt is { } oldExpiry && oldExpiry < oldEnds)
            oldEnds = oldExpiry;

        await using var tx = await db.Database.BeginTransactionAsync(cancellationToken);
        db.ApiTokens.Add(successorToken);
        await db.SaveChangesAsync(cancellationToken);
        // Compare-and-set on "not yet rotated": of two concurrent rotations exactly one wins.
        var won = await db.ApiTokens
            .Where(t => t.Id == old.Id && t.ReplacedById == null && (t.RevokedAt == null || t.RevokedAt > now))
            .ExecuteUpdateAsync(s => s.SetProperty(t => t.ReplacedById, successorToken.Id).SetProperty(t => t.RevokedAt, oldEnds), cancellationToken);
        if (won != 1)
        {
            await tx.RollbackAsync(cancellationToken);
            return ProblemResponses.Conflict($"Token {id} was rotated or revoked by another request just now.");
        }
        db.AuditEvents.Add(audit.Create(http, AuditEvents.TokenRotated, owner, old.OwnerId, old.Id.ToString(CultureInfo.InvariantCulture),
            new { successor_id = successorToken.Id, hint = old.Hint, successor_hint = successorToken.Hint, grace_seconds = grace }));
        await db.SaveChangesAsync(cancellationToken);
        await tx.CommitAsync(cancellationToken);
        await invalidation.TokenCreatedAsync(successorToken.TokenHash, cancellationToken);
        await invalidation.TokenChangedAsync(old.TokenHash, cancellationToken);

        http.Response.Headers.CacheControl = "no-store";
        http.Response.Headers.Pragma = "no-cache";
        return TypedResults.Ok(CreatedTokenResponse.From(successorToken, plaintext, owner));
    }

    private static async Task<Results<Ok<TokenUsageResponse>, ProblemHttpResult>> UsageAsync(
        long id, HttpContext http, PortcullisDb db, TimeProvider time, CancellationToken cancellationToken, int days = 30)
    {
        if (days is < 1 or > 366)
            return ProblemResponses.BadRequest("days must be between 1 and 366.");
        if (await FindVisibleAsync(id, http, db, cancellationToken) is null)
            return NotFound(id);
        return TypedResults.Ok(await CountUsageAsync(id, db, DateOnly.FromDateTime(time.GetUtcNow().UtcDateTime), days, cancellationToken));
    }

    /// <summary>Requests a day for the <paramref name="days"/> days up to <paramref name="today"/>, days without any included.</summary>
    internal static async Task<TokenUsageResponse> CountUsageAsync(long id, PortcullisDb db, DateOnly today, int days, CancellationToken cancellationToken)
    {
        var first = today.AddDays(1 - days);
        var firstText = first.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);
        var counts = await db.TokenUsage.AsNoTracking()
            .Where(u => u.TokenId == id && string.Compare(u.Day, firstText) >= 0)
            .ToDictionaryAsync(u => u.Day, u => u.Count, cancellationToken);
        var usage = Enumerable.Range(0, days)
            .Select(i => first.AddDays(i).ToString("yyyy-MM-dd", CultureInfo.InvariantCulture))
            .Select(d => new UsageDay(d, counts.GetValueOrDefault(d)))
            .ToArray();
        return new TokenUsageResponse(id, days, usage.Sum(u => u.Count), usage);
    }

    internal static async Task<(ApiToken Token, string Owner)?> FindVisibleAsync(
        long id, HttpContext http, PortcullisDb db, CancellationToken cancellationToken, bool tracked = false)
    {
        var caller = http.Credential();
        var tokens = tracked ? db.ApiTokens : db.ApiTokens.AsNoTracking();
        var row = await tokens.Where(t => t.Id == id)
            .Join(db.Users, t => t.OwnerId, u => u.Id, (t, u) => new { Token = t, Owner = u.Username })
            .FirstOrDefaultAsync(cancellationToken);
        if (row is null || (row.Token.OwnerId != caller.Owner.Id && !caller.Exercise(ScopeRequirement.Admin, http)))
            return null;
        return (row.Token, row.Owner);
    }

    internal static ProblemHttpResult NotFound(long id) => ProblemResponses.NotFound($"There is no token {id} that you can see.");

    internal static async Task<bool> NameTakenAsync(PortcullisDb db, long ownerId, string name, DateTime now, CancellationToken cancellationToken) =>
        await db.ApiTokens.AnyAsync(t => t.OwnerId == ownerId && t.Name == name && t.ReplacedById == null
            && (t.RevokedAt == null || t.RevokedAt > now) && (t.ExpiresAt == null || t.ExpiresAt > now), cancellationToken);

    private static async Task<(User? Owner, RuleError? Error)> ResolveOwnerAsync(
        string? requested, HttpContext http, PortcullisDb db, CancellationToken cancellationToken)
    {
        var caller = http.Credential();
        if (requested is null || User.Normalize(requested) == User.Normalize(caller.Owner.Name))
        {
            var self = await db.Users.AsNoTracking().FirstOrDefaultAsync(u => u.Id == caller.Owner.Id, cancellationToken);
            return self is null ? (null, RuleError.Forbidden("owner", "Your account no longer exists.")) : (self, null);
        }
        if (!caller.Exercise(ScopeRequirement.Admin, http))
            return (null, RuleError.Forbidden("owner", "Only admins may create tokens for another user or a service ('owner')."));
        var normalized = User.Normalize(requested);
        var owner = await db.Users.AsNoTracking().FirstOrDefaultAsync(u => u.NormalizedUsername == normalized, cancellationToken);
        if (owner is null)
            return (null, new RuleError("owner", $"There is no user or service named '{Truncate(requested)}'."));
        if (owner.IsDisabled)
            return (null, new RuleError("owner", $"'{owner.Username}' is disabled; enable it before creating tokens for it."));
        return (owner, null);
    }

    internal static RuleError? ValidateName(string? name)
    {
        if (string.IsNullOrWhiteSpace(name))
            return new RuleError("name", $"A token needs a name (1 to {MaxNameLength} characters), e.g. \"ci-deploy\".");
        if (name.Trim().Length > MaxNameLength)
            return new RuleError("name", $"A token name may have at most {MaxNameLength} characters.");
        if (name.Any(char.IsControl))
            return new RuleError("name", "A token name may not contain control characters.");
        return null;
    }

    internal static RuleError? ValidateDescription(string? description)
    {
        if (description is null)
            return null;
        if (description.Length > MaxDescriptionLength)
            return new RuleError("description", $"A description may have at most {MaxDescriptionLength} characters.");
        if (description.Any(c => char.IsControl(c) && c is not ('\n' or '\r' or '\t')))
            return new RuleError("description", "A description may not contain control characters other than line breaks and tabs.");
        return null;
    }

    /// <summary>
    /// Works out the expiry from <c>expires_in_days</c> or <c>expires_at</c> (a date means the end of
    /// that UTC day), applying the configured default and maximum.
    /// </summary>
    internal static (DateTime? ExpiresAt, RuleError? Error) ResolveExpiry(long? days, string? at, TokenOptions options, DateTime now)
    {
        if (days is not null && !string.IsNullOrWhiteSpace(at))
            return (null, new RuleError("expires_in_days", "Give either expires_in_days or expires_at, not both."));
        DateTime? expires = null;
        var dateOnly = false;
        if (days is { } d)
        {
            if (d < 1)
                return (null, new RuleError("expires_in_days", "expires_in_days must be at least 1. To make a token that never expires, leave it out."));
            if (d > 36_500)
                return (null, new RuleError("expires_in_days", "expires_in_days may be at most 36500 (100 years)."));
            expires = now.AddDays(d);
        }
        else if (!string.IsNullOrWhiteSpace(at))
        {
            if (DateOnly.TryParseExact(at, "yyyy-MM-dd", CultureInfo.InvariantCulture, DateTimeStyles.None, out var date))
            {
                expires = date.AddDays(1).ToDateTime(TimeOnly.MinValue, DateTimeKind.Utc);
                dateOnly = true;
            }
            else if (DateTimeOffset.TryParse(at, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var instant))
                expires = instant.UtcDateTime;
            else
                return (null, new RuleError("expires_at", $"expires_at '{Truncate(at)}' is not a date: use 2027-01-31 or 2027-01-31T12:00:00Z."));
            if (expires <= now)
                return (null, new RuleError("expires_at", "expires_at lies in the past; choose a future date."));
            if (expires > now.AddDays(36_500))
                return (null, new RuleError("expires_at", "expires_at may be at most 100 years away."));
        }
        else if (options.DefaultLifetimeDays is { } defaultDays)
        {
            expires = now.AddDays(defaultDays);
        }

        if (options.MaxLifetimeDays is { } max)
        {
            if (expires is null)
                return (null, new RuleError("expires_in_days", $"Tokens on this server must expire within {max} days; set expires_in_days or expires_at."));
            // A date names a whole day: the day on which the maximum falls is still allowed.
            var limit = dateOnly ? now.AddDays(max).Date.AddDays(1) : now.AddDays(max);
            if (expires > limit)
                return (null, new RuleError("expires_in_days", $"Tokens on this server may live at most {max} days (Tokens:MaxLifetimeDays)."));
        }
        return (expires, null);
    }

    private static string Truncate(string s) => s.Length <= 64 ? s : s[..64] + "…";
}
