using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Portcullis.Client;

/// <summary>Who a credential belongs to (<c>GET /api/v1/me</c>).</summary>
public sealed record Me(string Username, bool Admin, MeAuth Auth);

public sealed record MeAuth(string Kind, string? TokenId, IReadOnlyList<string> Scopes, string? ClientId);

/// <summary>An API token as listed: never its secret.</summary>
public sealed record TokenInfo(
    long Id, string Name, string? Description, string TokenHint, IReadOnlyList<string> Scopes, DateTime CreatedAt, DateTime? ExpiresAt,
    DateTime? LastUsedAt, string? LastUsedIp, string Status, string? Owner);

/// <summary>A token just created or rotated: <see cref="Token"/> is shown this once.</summary>
public sealed record CreatedToken(long Id, string Name, string? Description, string Token, string TokenHint, IReadOnlyList<string> Scopes, DateTime CreatedAt, DateTime? ExpiresAt);

public sealed record CreateTokenRequest(string Name, string? Description = null, int? ExpiresInDays = null, IReadOnlyList<string>? Scopes = null, string? Owner = null);

public sealed record AccessToken(string Token, string TokenType, int ExpiresIn, string Scope);

public sealed record ServiceInfo(string Name, string Version, string Upstream, bool Protected, string? Description, string Source, string Path)
{
    /// <summary>The service's own origin, where browsers use it (e.g. <c>http://model.localhost:8080/</c>).</summary>
    public string Origin { get; init; } = "";

    /// <summary>Its replicas (admins only; empty for others).</summary>
    public IReadOnlyList<string> Upstreams { get; init; } = [];

    /// <summary>Each replica's health as the gateway sees it (admins only).</summary>
    public IReadOnlyList<ServiceDestination>? Destinations { get; init; }
}

/// <summary>A replica of a service: <c>healthy</c>, <c>unhealthy</c> or <c>unknown</c>.</summary>
public sealed record ServiceDestination(string Address, string Health);

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

    public Task<Me> GetMeAsync(CancellationToken cancellationToken = default) => GetAsync<Me>("api/v1/me", cancellationToken);

    /// <summary>Your tokens; with <paramref name="all"/> (admin) everyone's, or one <paramref name="owner"/>'s.</summary>
    public Task<List<TokenInfo>> ListTokensAsync(bool all = false, string? owner = null, CancellationToken cancellationToken = default) =>
        GetAsync<List<TokenInfo>>("api/v1/tokens" + (owner is not null ? "?owner=" + Uri.EscapeDataString(owner) : all ? "?all=true" : ""), cancellationToken);

    public Task<TokenInfo> GetTokenAsync(long id, CancellationToken cancellationToken = default) => GetAsync<TokenInfo>($"api/v1/tokens/{id}", cancellationToken);

    public Task<CreatedToken> CreateTokenAsync(CreateTokenRequest request, CancellationToken cancellationToken = default) =>
        SendAsync<CreatedToken>(HttpMethod.Post, "api/v1/tokens", request, cancellationToken);

    public Task<CreatedToken> RotateTokenAsync(long id, int graceSeconds = 0, CancellationToken cancellationToken = default) =>
        SendAsync<CreatedToken>(HttpMethod.Post, $"api/v1/tokens/{id}/rotate", new { grace_seconds = graceSeconds }, cancellationToken);

    /// <summary>Revokes a token by id: it stops working at once, on every instance.</summary>
    public async Task RevokeTokenAsync(long id, CancellationToken cancellationToken = default)
    {
        using var response = await http.DeleteAsync($"api/v1/tokens/{id}", cancellationToken);
        await EnsureAsync(response, cancellationToken);
    }

    public Task<List<ServiceInfo>> ListServicesAsync(CancellationToken cancellationToken = default) => GetAsync<List<ServiceInfo>>("api/v1/services", cancellationToken);

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

    /// <summary>RFC 7009 revocation of any token you hold (API token, JWT, client secret). Unknown tokens are fine.</summary>
    public async Task RevokeAsync(string token, CancellationToken cancellationToken = default)
    {
        using var content = new FormUrlEncodedContent([new("token", token)]);
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

    private async Task<T> SendAsync<T>(HttpMethod method, string path, object body, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(method, path) { Content = JsonContent.Create(body, options: Json) };
        using var response = await http.SendAsync(request, cancellationToken);
        await EnsureAsync(response, cancellationToken);
        return (await response.Content.ReadFromJsonAsync<T>(Json, cancellationToken))!;
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
