using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Portcullis.Client;

/// <summary>An access token (JWT) from the password grant at <c>/auth/token</c>.</summary>
public sealed record AccessToken(string Token, string TokenType, int ExpiresIn, string Scope);

/// <summary>One poll of a device login: the token once approved, otherwise the RFC 8628 error and its description.</summary>
public sealed record DevicePoll(string? Token, string? Error, string? Description);

/// <summary>What the server said when it refused: the HTTP status, and the problem or OAuth error it sent.</summary>
public sealed class PortcullisApiException(HttpStatusCode status, string? error, string message) : Exception(message)
{
    public HttpStatusCode Status { get; } = status;

    /// <summary>The OAuth <c>error</c> code, or the problem's <c>title</c>.</summary>
    public string? Error { get; } = error;
}

/// <summary>
/// A typed client for the Portcullis REST and auth endpoints. Give it an <see cref="HttpClient"/> whose
/// <c>BaseAddress</c> is the server (e.g. <c>https://auth.example.com/</c>) and that sends a credential,
/// for instance through <see cref="BearerTokenHandler"/>; or use <see cref="FromEnvironment"/>.
/// </summary>
public sealed class PortcullisClient(HttpClient http)
{
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public HttpClient Http => http;

    /// <summary>
    /// A client for the server and credential in the environment, as a managed service gets them:
    /// <c>PORTCULLIS_API_URL</c> (<c>.../api/v1</c>) or <c>PORTCULLIS_URL</c>, and <c>PORTCULLIS_API_TOKEN</c> or <c>PORTCULLIS_TOKEN</c>.
    /// </summary>
    public static PortcullisClient FromEnvironment()
    {
        var url = Environment.GetEnvironmentVariable("PORTCULLIS_URL") is { Length: > 0 } u ? u
            : Environment.GetEnvironmentVariable("PORTCULLIS_API_URL") is { Length: > 0 } api ? api.TrimEnd('/').Replace("/api/v1", "", StringComparison.Ordinal)
            : throw new InvalidOperationException("Set PORTCULLIS_URL (or PORTCULLIS_API_URL) to the Portcullis server, e.g. http://127.0.0.1:8080.");
        var token = Environment.GetEnvironmentVariable("PORTCULLIS_API_TOKEN") is { Length: > 0 } t ? t
            : Environment.GetEnvironmentVariable("PORTCULLIS_TOKEN") is { Length: > 0 } t2 ? t2
            : throw new InvalidOperationException("Set PORTCULLIS_API_TOKEN (or PORTCULLIS_TOKEN) to a Portcullis token.");
        return new PortcullisClient(new HttpClient(new BearerTokenHandler(token) { InnerHandler = new HttpClientHandler() })
        {
            BaseAddress = new Uri(url.TrimEnd('/') + "/"),
        });
    }

    public Task<MeResponse> GetMeAsync(CancellationToken cancellationToken = default) => GetAsync<MeResponse>("api/v1/me", cancellationToken);

    /// <summary>Your tokens; with <paramref name="all"/> (admin) everyone's, or one <paramref name="owner"/>'s.</summary>
    public Task<List<TokenResponse>> ListTokensAsync(bool all = false, string? owner = null, CancellationToken cancellationToken = default) =>
        GetAsync<List<TokenResponse>>("api/v1/tokens" + (owner is not null ? "?owner=" + Uri.EscapeDataString(owner) : all ? "?all=true" : ""), cancellationToken);

    public Task<TokenResponse> GetTokenAsync(long id, CancellationToken cancellationToken = default) => GetAsync<TokenResponse>($"api/v1/tokens/{id}", cancellationToken);

    public Task<CreatedTokenResponse> CreateTokenAsync(CreateTokenRequest request, CancellationToken cancellationToken = default) =>
        SendAsync<CreatedTokenResponse>(HttpMethod.Post, "api/v1/tokens", request, cancellationToken);

    public Task<CreatedTokenResponse> RotateTokenAsync(long id, int graceSeconds = 0, CancellationToken cancellationToken = default) =>
        SendAsync<CreatedTokenResponse>(HttpMethod.Post, $"api/v1/tokens/{id}/rotate", new RotateTokenRequest(graceSeconds), cancellationToken);

    /// <summary>Adds a webhook for events about your own tokens; the answer's <see cref="WebhookResponse.Secret"/> is shown this once.</summary>
    public Task<WebhookResponse> CreateWebhookAsync(CreateWebhookRequest request, CancellationToken cancellationToken = default) =>
        SendAsync<WebhookResponse>(HttpMethod.Post, "api/v1/webhooks", request, cancellationToken);

    public Task<List<WebhookResponse>> ListWebhooksAsync(CancellationToken cancellationToken = default) =>
        GetAsync<List<WebhookResponse>>("api/v1/webhooks", cancellationToken);

    public Task DeleteWebhookAsync(long id, CancellationToken cancellationToken = default) => DeleteAsync($"api/v1/webhooks/{id}", cancellationToken);

    /// <summary>The latest deliveries to your webhooks; <paramref name="all"/> (admins): every delivery.</summary>
    public Task<List<WebhookDeliveryResponse>> ListDeliveriesAsync(bool all = false, CancellationToken cancellationToken = default) =>
        GetAsync<List<WebhookDeliveryResponse>>("api/v1/webhooks/deliveries" + (all ? "?all=true" : ""), cancellationToken);

    /// <summary>What the token relied on in the last 30 days, and the narrowest scopes that cover it.</summary>
    public Task<SuggestedScopesResponse> GetSuggestedScopesAsync(long id, CancellationToken cancellationToken = default) =>
        GetAsync<SuggestedScopesResponse>($"api/v1/tokens/{id}/suggested-scopes", cancellationToken);

    /// <summary>Narrows the token to <paramref name="scopes"/>, or to what it used when null; never wider, at once on every instance.</summary>
    public Task<TokenResponse> NarrowTokenAsync(long id, string[]? scopes = null, CancellationToken cancellationToken = default) =>
        SendAsync<TokenResponse>(HttpMethod.Post, $"api/v1/tokens/{id}/narrow", new NarrowTokenRequest(scopes), cancellationToken);

    /// <summary>Revokes a token by id: it stops working at once, on every instance.</summary>
    public Task RevokeTokenAsync(long id, CancellationToken cancellationToken = default) => DeleteAsync($"api/v1/tokens/{id}", cancellationToken);

    public Task<List<ServiceResponse>> ListServicesAsync(CancellationToken cancellationToken = default) => GetAsync<List<ServiceResponse>>("api/v1/services", cancellationToken);

    /// <summary>Registers a service behind the gateway (admin).</summary>
    public Task<ServiceResponse> RegisterServiceAsync(RegisterServiceRequest request, CancellationToken cancellationToken = default) =>
        SendAsync<ServiceResponse>(HttpMethod.Post, "api/v1/services", request, cancellationToken);

    /// <summary>Removes a service registered through the API (admin), named <c>name_version</c>.</summary>
    public Task RemoveServiceAsync(string name, string version, CancellationToken cancellationToken = default) =>
        DeleteAsync($"api/v1/services/{Uri.EscapeDataString(name)}_{Uri.EscapeDataString(version)}", cancellationToken);

    public Task<List<UserResponse>> ListUsersAsync(CancellationToken cancellationToken = default) => GetAsync<List<UserResponse>>("api/v1/users", cancellationToken);

    public Task<UserResponse> CreateUserAsync(CreateUserRequest request, CancellationToken cancellationToken = default) =>
        SendAsync<UserResponse>(HttpMethod.Post, "api/v1/users", request, cancellationToken);

    /// <summary>Changes what the request gives (admin rights, disabled, password) and nothing else.</summary>
    public Task<UserResponse> UpdateUserAsync(string username, UpdateUserRequest request, CancellationToken cancellationToken = default) =>
        SendAsync<UserResponse>(HttpMethod.Patch, $"api/v1/users/{Uri.EscapeDataString(username)}", request, cancellationToken);

    public Task DeleteUserAsync(string username, CancellationToken cancellationToken = default) =>
        DeleteAsync($"api/v1/users/{Uri.EscapeDataString(username)}", cancellationToken);

    /// <summary>Your OAuth clients (an admin sees everyone's).</summary>
    public Task<List<ClientResponse>> ListClientsAsync(CancellationToken cancellationToken = default) => GetAsync<List<ClientResponse>>("api/v1/clients", cancellationToken);

    /// <summary>A new OAuth client; its secret is in the answer, this once.</summary>
    public Task<ClientSecretResponse> CreateClientAsync(CreateClientRequest request, CancellationToken cancellationToken = default) =>
        SendAsync<ClientSecretResponse>(HttpMethod.Post, "api/v1/clients", request, cancellationToken);

    /// <summary>A new secret for a client; the old one stops working at once.</summary>
    public Task<ClientSecretResponse> RotateClientSecretAsync(string clientId, CancellationToken cancellationToken = default) =>
        SendAsync<ClientSecretResponse>(HttpMethod.Post, $"api/v1/clients/{Uri.EscapeDataString(clientId)}/rotate-secret", null, cancellationToken);

    public Task DeleteClientAsync(string clientId, CancellationToken cancellationToken = default) =>
        DeleteAsync($"api/v1/clients/{Uri.EscapeDataString(clientId)}", cancellationToken);

    /// <summary>A new JWT signing key (admin): it signs from now on, the old ones still verify.</summary>
    public Task<KeyRotationResponse> RotateSigningKeyAsync(CancellationToken cancellationToken = default) =>
        SendAsync<KeyRotationResponse>(HttpMethod.Post, "api/v1/keys/rotate", null, cancellationToken);

    /// <summary>The password grant: an access token (JWT); <paramref name="cli"/> for the longer-lived CLI one.</summary>
    public async Task<AccessToken> LoginAsync(string username, string password, bool cli = false, CancellationToken cancellationToken = default)
    {
        using var content = new FormUrlEncodedContent([new("grant_type", "password"), new("username", username), new("password", password)]);
        using var response = await http.PostAsync(cli ? "auth/token/cli" : "auth/token", content, cancellationToken);
        await EnsureAsync(response, cancellationToken);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>(Json, cancellationToken);
        return new AccessToken(body.GetProperty("access_token").GetString()!, body.GetProperty("token_type").GetString()!,
            body.GetProperty("expires_in").GetInt32(), body.GetProperty("scope").GetString() ?? "");
    }

    /// <summary>
    /// The token exchange (RFC 8693): a token of one of the server's trusted issuers (a CI job's OpenID Connect token) for a
    /// short-lived access token; <paramref name="scope"/> asks for less than the matching rule gives.
    /// </summary>
    public async Task<AccessToken> ExchangeTokenAsync(string subjectToken, string? scope = null, CancellationToken cancellationToken = default)
    {
        List<KeyValuePair<string, string>> form =
        [
            new("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), new("subject_token", subjectToken),
            new("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ];
        if (scope is not null)
            form.Add(new("scope", scope));
        using var content = new FormUrlEncodedContent(form);
        using var response = await http.PostAsync("auth/token", content, cancellationToken);
        await EnsureAsync(response, cancellationToken);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>(Json, cancellationToken);
        return new AccessToken(body.GetProperty("access_token").GetString()!, body.GetProperty("token_type").GetString()!,
            body.GetProperty("expires_in").GetInt32(), body.GetProperty("scope").GetString() ?? "");
    }

    /// <summary>
    /// Starts a device login (RFC 8628) as Portcullis's CLI client: a person then approves it at the answer's
    /// <c>verification_uri</c>, and <see cref="PollDeviceLoginAsync"/> collects the API token they chose.
    /// </summary>
    /// <param name="deviceName">This machine's name, which the approval page shows and names the token after.</param>
    public async Task<DeviceAuthorizationResponse> StartDeviceLoginAsync(string? scope, string? deviceName, CancellationToken cancellationToken = default)
    {
        var fields = new List<KeyValuePair<string, string>> { new("client_id", CliClientId) };
        if (scope is not null)
            fields.Add(new("scope", scope));
        if (deviceName is not null)
            fields.Add(new("device_name", deviceName));
        using var content = new FormUrlEncodedContent(fields);
        using var response = await http.PostAsync("auth/device", content, cancellationToken);
        await EnsureAsync(response, cancellationToken);
        return (await response.Content.ReadFromJsonAsync<DeviceAuthorizationResponse>(Json, cancellationToken))!;
    }

    /// <summary>
    /// One poll of a device login: the approved token, or the RFC 8628 §3.5 error (<c>authorization_pending</c>,
    /// <c>slow_down</c>, <c>access_denied</c>, <c>expired_token</c>) with the server's description. Other refusals throw.
    /// </summary>
    public async Task<DevicePoll> PollDeviceLoginAsync(string deviceCode, CancellationToken cancellationToken = default)
    {
        using var content = new FormUrlEncodedContent([new("grant_type", DeviceCodeGrantType), new("device_code", deviceCode), new("client_id", CliClientId)]);
        using var response = await http.PostAsync("auth/token", content, cancellationToken);
        if (response.StatusCode == HttpStatusCode.BadRequest)
        {
            var refusal = await response.Content.ReadFromJsonAsync<JsonElement>(Json, cancellationToken);
            if (refusal.TryGetProperty("error", out var e) && e.GetString() is "authorization_pending" or "slow_down" or "access_denied" or "expired_token")
                return new DevicePoll(null, e.GetString(), refusal.TryGetProperty("error_description", out var d) ? d.GetString() : null);
        }
        await EnsureAsync(response, cancellationToken);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>(Json, cancellationToken);
        return body.ValueKind == JsonValueKind.Object && body.TryGetProperty("access_token", out var token) && token.GetString() is { Length: > 0 } issued
            ? new DevicePoll(issued, null, null)
            : throw new PortcullisApiException(response.StatusCode, null, "The server's answer to the device login carries no access_token.");
    }

    /// <summary>Portcullis's own public client for CLI logins.</summary>
    public const string CliClientId = "portcullis-cli";

    public const string DeviceCodeGrantType = "urn:ietf:params:oauth:grant-type:device_code";

    /// <summary>RFC 7009 revocation of any token you hold (API token, JWT, client secret). Unknown tokens are fine.</summary>
    public Task RevokeAsync(string token, CancellationToken cancellationToken = default) => RevokeAsync(token, reason: null, cancellationToken);

    /// <summary>
    /// Revokes a token through <c>/auth/revoke</c>; <paramref name="reason"/> <c>leaked</c> also reports it as found where it
    /// should not be (<c>token.leaked</c>, which webhooks can hear).
    /// </summary>
    public async Task RevokeAsync(string token, string? reason, CancellationToken cancellationToken = default)
    {
        using var content = new FormUrlEncodedContent(reason is null ? [new("token", token)] : [new("token", token), new("reason", reason)]);
        using var response = await http.PostAsync("auth/revoke", content, cancellationToken);
        await EnsureAsync(response, cancellationToken);
    }

    /// <summary>Any endpoint, for what has no typed method yet: the answer's JSON (null for 204).</summary>
    public async Task<JsonElement?> SendJsonAsync(HttpMethod method, string path, object? body = null, CancellationToken cancellationToken = default)
    {
        using var request = new HttpRequestMessage(method, path.TrimStart('/'));
        if (body is not null)
            request.Content = JsonContent.Create(body, options: Json);
        using var response = await http.SendAsync(request, cancellationToken);
        await EnsureAsync(response, cancellationToken);
        if (response.StatusCode == HttpStatusCode.NoContent || response.Content.Headers.ContentLength == 0)
            return null;
        return await response.Content.ReadFromJsonAsync<JsonElement>(Json, cancellationToken);
    }

    private async Task<T> GetAsync<T>(string path, CancellationToken cancellationToken)
    {
        using var response = await http.GetAsync(path, cancellationToken);
        await EnsureAsync(response, cancellationToken);
        return (await response.Content.ReadFromJsonAsync<T>(Json, cancellationToken))!;
    }

    private async Task<T> SendAsync<T>(HttpMethod method, string path, object? body, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(method, path) { Content = body is null ? null : JsonContent.Create(body, options: Json) };
        using var response = await http.SendAsync(request, cancellationToken);
        await EnsureAsync(response, cancellationToken);
        return (await response.Content.ReadFromJsonAsync<T>(Json, cancellationToken))!;
    }

    private async Task DeleteAsync(string path, CancellationToken cancellationToken)
    {
        using var response = await http.DeleteAsync(path, cancellationToken);
        await EnsureAsync(response, cancellationToken);
    }

    /// <summary>Turns a refusal into <see cref="PortcullisApiException"/> carrying the server's own words.</summary>
    private static async Task EnsureAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        if (response.IsSuccessStatusCode)
            return;
        string? error = null, detail = null;
        try
        {
            var body = await response.Content.ReadFromJsonAsync<JsonElement>(cancellationToken);
            error = body.TryGetProperty("error", out var e) ? e.GetString() : body.TryGetProperty("title", out var t) ? t.GetString() : null;
            detail = body.TryGetProperty("error_description", out var d) ? d.GetString() : body.TryGetProperty("detail", out var p) ? p.GetString() : null;
        }
        catch (Exception e) when (e is JsonException or NotSupportedException)
        {
        }
        throw new PortcullisApiException(response.StatusCode, error,
            $"Portcullis answered {(int)response.StatusCode} {response.ReasonPhrase}{(detail is null ? "" : ": " + detail)}");
    }
}

/// <summary>Adds <c>Authorization: Bearer &lt;token&gt;</c> to every request, e.g. of an HttpClient calling a protected service.</summary>
public sealed class BearerTokenHandler : DelegatingHandler
{
    private readonly Func<CancellationToken, ValueTask<string>> _token;

    public BearerTokenHandler(string token) => _token = _ => ValueTask.FromResult(token);

    /// <summary>For a token that changes (read from a file, refreshed): asked for on every request.</summary>
    public BearerTokenHandler(Func<CancellationToken, ValueTask<string>> token) => _token = token;

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", await _token(cancellationToken));
        return await base.SendAsync(request, cancellationToken);
    }
}
