using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Gateway;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Tokens;
using Portcullis.OAuth;

namespace Portcullis.Compat;

/// <summary>Daeploy's answer to <c>daeploy token</c>: the new API token and its id.</summary>
internal sealed record DaeployToken([property: JsonPropertyName("Token")] string Token, [property: JsonPropertyName("Id")] string Id);

/// <summary>A service as <c>daeploy ls</c> reads it; <c>main</c> is the version <c>/services/{name}/</c> reaches.</summary>
internal sealed record DaeployService(string Name, string Version, bool Main, string? Image);

/// <summary>What <c>daeploy ls</c> reads of a service's state (the part of Docker's inspection it uses).</summary>
internal sealed record DaeployInspection([property: JsonPropertyName("State")] DaeployState State);

internal sealed record DaeployState(
    [property: JsonPropertyName("Status")] string Status,
    [property: JsonPropertyName("Running")] bool Running,
    [property: JsonPropertyName("StartedAt")] string? StartedAt,
    [property: JsonPropertyName("FinishedAt")] string? FinishedAt);

/// <summary>An error as Daeploy's CLI prints it (FastAPI's shape).</summary>
internal sealed record DaeployError(string Detail);

/// <summary>
/// What Daeploy's CLI (1.3) speaks, so that it works against Portcullis unmodified (docs/compatibility.md):
/// <list type="bullet">
/// <item><c>POST /auth/login</c>, a form with <c>username</c> and <c>password</c>: 303 to <c>/</c> with the cookie
/// <c>daeploy</c> holding a CLI access token, which the CLI keeps and sends as <c>Authorization: Bearer</c>.</item>
/// <item><c>POST /auth/token</c> with that Bearer credential and <c>{"expire_in_days": N | null}</c> (or the query):
/// 201 <c>{"Token", "Id"}</c>, a new API token with the caller's rights, listed with the person's other tokens.</item>
/// <item><c>GET /services/</c> with a Bearer credential: the services the caller may reach, as <c>daeploy ls</c> reads them,
/// and <c>GET /services/~inspection?name=&amp;version=</c>, each one's state (a service Portcullis runs: its process's; any
/// other: <c>external</c>, running since it was registered).</item>
/// </list>
/// Its "am I logged in" check is forward-auth's <c>GET /auth/verify</c>. Errors are <c>{"detail": ...}</c>, which the CLI prints.
/// Logins are throttled and audited as every login is; the token is created by the same code as <c>POST /api/v1/tokens</c>.
/// </summary>
internal static class DaeployApi
{
    /// <summary>Not a service: names are <c>[a-z0-9-]+</c>. The gateway leaves it to this endpoint.</summary>
    public const string InspectionPath = "/services/~inspection";

    public static IEndpointRouteBuilder MapDaeploy(this IEndpointRouteBuilder app)
    {
        app.MapPost("/auth/login", LoginAsync).WithTags("Compatibility").DisableAntiforgery().ExcludeFromDescription();
        app.MapGet(InspectionPath, Inspect).WithTags("Compatibility").ExcludeFromDescription();
        return app;
    }

    /// <summary>
    /// Daeploy asks <c>/auth/token</c> for an API token with a Bearer credential and JSON (or no body). An OAuth client
    /// authenticates with Basic or the body, and sends a form: a form is always a grant, whatever else it carries.
    /// </summary>
    public static bool IsTokenRequest(HttpRequest request) =>
        !request.HasFormContentType
        && request.Headers.Authorization.ToString() is var header
        && (header.StartsWith("Bearer", StringComparison.OrdinalIgnoreCase) || header.StartsWith("token ", StringComparison.OrdinalIgnoreCase));

    private static async Task<IResult> LoginAsync(HttpContext http, PortcullisDb db, PasswordHasher hasher, LoginThrottle throttle, JwtService jwts,
        AuditLog audit, IOptions<JwtOptions> jwt)
    {
        http.Response.Headers.CacheControl = "no-store";
        if (!http.Request.HasFormContentType)
            return Error(StatusCodes.Status400BadRequest, "Send 'username' and 'password' as an application/x-www-form-urlencoded form.");
        IFormCollection form;
        try
        {
            form = await http.Request.ReadFormAsync(http.RequestAborted);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or BadHttpRequestException)
        {
            return Error(StatusCodes.Status400BadRequest, "The form could not be read.");
        }
        var username = form["username"].ToString().Trim();
        var password = form["password"].ToString();
        if (username.Length == 0 || password.Length == 0)
            return Error(StatusCodes.Status400BadRequest, "Send both 'username' and 'password'.");

        await using var attempt = await throttle.CheckAsync(LoginKind.Password, username, http, http.RequestAborted);
        if (attempt.IsThrottled)
            return Error(StatusCodes.Status429TooManyRequests, attempt.RefuseWith429(http.Response));
        var user = await PasswordLogin.CheckAsync(http, db, hasher, audit, attempt, username, password, "daeploy");
        if (user is null)
            return Error(StatusCodes.Status401Unauthorized, "The username or password is wrong, or the account is disabled.");

        var lifetime = jwt.Value.CliTokenLifetime;
        var issued = jwts.Issue(user.Username, PrincipalCache.ToState(user, 0).Rights, lifetime, user.Id, user.CredentialVersion, FirstPartyClients.Cli);
        db.AuditEvents.Add(audit.Create(http, AuditEvents.LoginSucceeded, user.Username, user.Id, issued.Jti,
            new { path = "daeploy", lifetime_seconds = issued.ExpiresIn, client_id = FirstPartyClients.Cli }));
        await db.SaveChangesAsync(http.RequestAborted);
        // Not a session: nothing of Portcullis's accepts this cookie. The CLI reads it from its cookie jar and sends it as
        // Bearer; the gateway keeps it from upstreams like Portcullis's own cookies.
        http.Response.Cookies.Append(PortcullisCookies.Daeploy, issued.AccessToken, new CookieOptions
        {
            HttpOnly = true, Secure = http.Request.IsHttps, SameSite = SameSiteMode.Strict, Path = "/", MaxAge = lifetime, IsEssential = true,
        });
        http.Response.Headers.Location = "/";
        return Results.StatusCode(StatusCodes.Status303SeeOther);
    }

    /// <summary><c>daeploy token [DAYS]</c>: a new API token with the rights of the Bearer credential, for DAYS days or the server's default.</summary>
    public static async Task<IResult> CreateTokenAsync(HttpContext http)
    {
        http.Response.Headers.CacheControl = "no-store";
        if (http.Features.Get<Credential>() is not { } caller)
            return Unauthenticated(http);
        if (caller.IsClientCredentials)
            return Error(StatusCodes.Status403Forbidden, ClientCredentialRules.Reason);
        if (!caller.Exercise(ScopeRequirement.Api, http))
            return Error(StatusCodes.Status403Forbidden, "Creating a token needs a credential with the 'api' scope. Log in with 'daeploy login' again.");
        var (days, daysError) = await ReadDaysAsync(http.Request);
        if (daysError is not null)
            return Error(StatusCodes.Status400BadRequest, daysError);

        var services = http.RequestServices;
        var now = services.GetRequiredService<TimeProvider>().GetUtcNow().UtcDateTime;
        var name = $"daeploy {now.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture)} {Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(2))}";
        var request = new CreateTokenRequest(name, "Created by Daeploy's CLI ('daeploy token').", days, null, [.. caller.Effective.ToNames()], null, null, null, null, null, null);
        var (created, error) = await TokensApi.IssueAsync(request, http, services.GetRequiredService<PortcullisDb>(), services.GetRequiredService<TokenFormat>(),
            services.GetRequiredService<AuditLog>(), services.GetRequiredService<InvalidationBus>(), services.GetRequiredService<IOptions<TokenOptions>>().Value,
            services.GetRequiredService<TimeProvider>(), http.RequestAborted);
        if (error is not null)
            return Error(error.Status, error.Message);
        http.Response.Headers.CacheControl = "no-store";
        return TypedResults.Json(new DaeployToken(created!.Token!, created.Id.ToString(CultureInfo.InvariantCulture)),
            contentType: "application/json", statusCode: StatusCodes.Status201Created);
    }

    /// <summary>
    /// <c>daeploy ls</c>: the services the caller may reach, in Daeploy's shape (JSON, never the UI's login page: a request with
    /// <c>Authorization</c> comes from a program).
    /// </summary>
    public static IResult ListServices(HttpContext http)
    {
        if (http.Features.Get<Credential>() is not { } caller)
            return Unauthenticated(http);
        var registry = http.RequestServices.GetRequiredService<ServiceRegistry>();
        return TypedResults.Json(registry.ReachableBy(caller)
            .Select(s => new DaeployService(s.Name, s.Version, registry.Find(s.Name) == s, null))
            .ToArray(), contentType: "application/json");
    }

    private static IResult Inspect(HttpContext http, ServiceRegistry registry, ServicePrincipals.ManagedProcesses processes, string? name, string? version)
    {
        if (http.Features.Get<Credential>() is not { } caller)
            return Unauthenticated(http);
        if (name is null || version is null || registry.Find(name, version) is not { } service || !service.IsReachableBy(caller))
            return Error(StatusCodes.Status404NotFound, $"There is no service '{name}_{version}' that you may reach.");
        var state = processes.States.FirstOrDefault(s => s.Name == service.Name) is { } managed
            ? new DaeployState(managed.State, managed.State == "running", Iso(managed.StartedAt), null)
            : new DaeployState("external", true, Iso(service.RegisteredAt), null);
        return TypedResults.Json(new DaeployInspection(state), contentType: "application/json");

        static string? Iso(DateTime? at) => at?.ToString("yyyy-MM-ddTHH:mm:ss", CultureInfo.InvariantCulture);
    }

    /// <summary><c>expire_in_days</c>: a whole number of days or null, from the JSON body (what the CLI sends) or the query (what Daeploy's server read).</summary>
    private static async Task<(long? Days, string? Error)> ReadDaysAsync(HttpRequest request)
    {
        const string Expected = "'expire_in_days' is a whole number of days, or null for the server's default.";
        if (request.Query.TryGetValue("expire_in_days", out var query))
        {
            var text = query.ToString();
            if (text.Length == 0 || text == "null")
                return (null, null);
            return long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var fromQuery) ? (fromQuery, null) : (null, Expected);
        }
        if (!request.HasJsonContentType())
            return (null, null);
        try
        {
            using var body = await JsonDocument.ParseAsync(request.Body, default, request.HttpContext.RequestAborted);
            if (body.RootElement.ValueKind != JsonValueKind.Object)
                return (null, "Send a JSON object such as {\"expire_in_days\": 30}.");
            if (!body.RootElement.TryGetProperty("expire_in_days", out var days) || days.ValueKind == JsonValueKind.Null)
                return (null, null);
            return days.ValueKind == JsonValueKind.Number && days.TryGetInt64(out var value) ? (value, null) : (null, Expected);
        }
        catch (JsonException)
        {
            return (null, "The body is not valid JSON.");
        }
    }

    private static IResult Unauthenticated(HttpContext http)
    {
        var failure = http.Items[CredentialAuthenticationHandler.FailureKey] as AuthFailure;
        // A good token refused here (its address, its rate): the problem document's "detail" is what Daeploy's CLI prints.
        if (failure is { IsRefusal: true })
            return new AuthFailureResult(failure);
        if (failure == AuthFailure.Unavailable)
        {
            http.Response.Headers.RetryAfter = "5";
            return Error(StatusCodes.Status503ServiceUnavailable, "The credential cannot be checked right now because the database does not answer. Try again shortly.");
        }
        http.Response.Headers.WWWAuthenticate = $"Bearer realm=\"{CredentialAuthenticationHandler.Realm}\", error=\"invalid_token\"";
        return Error(StatusCodes.Status401Unauthorized, (failure?.Description ?? "The credential is invalid.") + " Log in again with 'daeploy login'.");
    }

    private static IResult Error(int status, string detail) => TypedResults.Json(new DaeployError(detail), contentType: "application/json", statusCode: status);
}
