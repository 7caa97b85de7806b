using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Primitives;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Users;

namespace Portcullis.OAuth;

/// <param name="IssuedTokenType">Only in the answer to a token exchange (RFC 8693 §2.2.1).</param>
internal sealed record TokenEndpointResponse(string AccessToken, string TokenType, int ExpiresIn, string Scope,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? IssuedTokenType = null);

/// <summary>RFC 6749 §5.2 error body.</summary>
internal sealed record OAuthError(string Error, string ErrorDescription);

/// <summary>
/// The error body's serializer, generated at build time: every refused request at the token endpoint writes one, and
/// the generated writer costs it less than the reflection-based one (docs/performance.md, "Under a flood").
/// </summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(OAuthError))]
internal sealed partial class OAuthJson : JsonSerializerContext;

/// <summary>What <c>/auth/token</c> reads, as a form or a JSON object (for the OpenAPI document).</summary>
internal sealed record TokenRequest(string? GrantType, string? Username, string? Password, string? Scope, string? ClientId, string? ClientSecret, string? DeviceCode,
    string? SubjectToken, string? SubjectTokenType, string? RequestedTokenType);

/// <summary>What <c>/auth/introspect</c> and <c>/auth/revoke</c> read, as a form or a JSON object (for the OpenAPI document).</summary>
internal sealed record TokenParameterRequest(string? Token, string? TokenTypeHint, string? ClientId, string? ClientSecret);

/// <summary>An RFC 6749 error as Airflow's clients read it: <c>detail</c> beside <c>error</c> and <c>error_description</c>.</summary>
internal sealed record AirflowError(string Error, string ErrorDescription, string Detail);

/// <summary>
/// The OAuth2-style token endpoint (docs/decisions.md): <c>POST /auth/token</c> (access tokens, 1 h) and
/// <c>POST /auth/token/cli</c> (CLI tokens, 7 days), with JSON or form bodies. A form is answered as RFC 6749
/// says (200); JSON, Airflow's form, as Airflow's clients expect (201, errors with <c>detail</c>).
/// </summary>
internal static class OAuthApi
{
    /// <summary>
    /// Credentials on requests (tokens, JWTs, sessions) and the token endpoint that issues them: the verifier and its caches,
    /// passwords and their throttle, signing keys sealed at rest, the authentication scheme and the scope policies.
    /// </summary>
    public static IServiceCollection AddCredentials(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<AuthOptions>().Bind(configuration.GetSection(AuthOptions.Section)).ValidateOnStart();
        services.AddOptions<JwtOptions>().Bind(configuration.GetSection(JwtOptions.Section)).ValidateOnStart();
        services.AddOptions<KeysOptions>().Bind(configuration.GetSection(KeysOptions.Section));
        services.AddSingleton<IValidateOptions<AuthOptions>, AuthOptionsValidator>();
        services.AddSingleton<IValidateOptions<JwtOptions>, AuthOptionsValidator>();
        services.AddSingleton<PasswordHasher>();
        services.AddSingleton<PrincipalCache>();
        services.AddSingleton<SessionStore>();
        services.AddSingleton<KeySealing>();
        services.AddSingleton<SigningKeys>();
        services.AddSingleton<JwtService>();
        services.AddSingleton<RevokedJwts>();
        services.AddSingleton<CredentialVerifier>();
        services.AddScoped<TokenEndpoint>();
        services.AddSingleton<DeviceGrant>();
        services.AddOptions<Federation.TrustedIssuersOptions>().Configure<IConfiguration>((o, c) => o.Load(c.GetSection(Federation.TrustedIssuersOptions.Section)))
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<Federation.TrustedIssuersOptions>, Federation.TrustedIssuersOptionsValidator>();
        services.AddSingleton<Federation.TrustedIssuers>();
        services.AddSingleton<Federation.TokenExchangeGrant>();
        services.AddSingleton<FullCounters>();
        services.AddScoped<LoginThrottle>();
        services.AddAuthentication(CredentialAuthenticationHandler.SchemeName)
            .AddScheme<AuthenticationSchemeOptions, CredentialAuthenticationHandler>(CredentialAuthenticationHandler.SchemeName, null);
        services.AddAuthorization(Policies.Add);
        services.AddSingleton<IAuthorizationMiddlewareResultHandler, ScopeAwareResultHandler>();
        return services;
    }

    public static IEndpointRouteBuilder MapOAuth(this IEndpointRouteBuilder app)
    {
        var auth = app.MapGroup("/auth").WithTags("Authentication");
        auth.MapPost("/token", (HttpContext http, TokenEndpoint endpoint, IOptions<JwtOptions> jwt) =>
            Compat.DaeployApi.IsTokenRequest(http.Request)
                ? Compat.DaeployApi.CreateTokenAsync(http)
                : endpoint.HandleAsync(http, jwt.Value.AccessTokenLifetime, FirstPartyClients.Portcullis)).DisableAntiforgery().DescribedAsTokenEndpoint();
        auth.MapPost("/token/cli", (HttpContext http, TokenEndpoint endpoint, IOptions<JwtOptions> jwt) =>
            endpoint.HandleAsync(http, jwt.Value.CliTokenLifetime, FirstPartyClients.Cli)).DisableAntiforgery().DescribedAsTokenEndpoint();
        auth.MapPost("/device", (HttpContext http, DeviceGrant device, PublicUrl url) => device.AuthorizeAsync(http, url.Value)).DisableAntiforgery()
            .DocumentedBody<DeviceAuthorizationRequest>("application/x-www-form-urlencoded", "application/json")
            .Produces<DeviceAuthorizationResponse>(StatusCodes.Status200OK)
            .ProducesOAuthErrors();
        foreach (var path in new[] { "/token", "/token/cli", "/device" })
            auth.MapMethods(path, ["GET", "PUT", "DELETE", "PATCH"], MethodNotAllowed).ExcludeFromDescription();
        auth.MapIntrospectionAndRevocation();

        var wellKnown = app.MapGroup("/.well-known").WithTags("Discovery");
        wellKnown.MapGet("/jwks.json", (SigningKeys keys, HttpContext http) =>
        {
            http.Response.Headers.CacheControl = "public, max-age=300";
            return TypedResults.Json(keys.Jwks());
        });
        // One document at both paths (RFC 9068 §4: they must agree); OpenID Connect clients look at the second.
        wellKnown.MapGet("/oauth-authorization-server", (PublicUrl url, IOptions<AuthOptions> auth, Federation.TrustedIssuers issuers) =>
            TypedResults.Json(Discovery(url.Value, auth.Value, issuers.Any)));
        wellKnown.MapGet("/openid-configuration", (PublicUrl url, IOptions<AuthOptions> auth, Federation.TrustedIssuers issuers) =>
            TypedResults.Json(Discovery(url.Value, auth.Value, issuers.Any)));
        return app;
    }

    /// <summary>
    /// RFC 8414 authorization server metadata, also served at the OpenID Connect discovery path, where much tooling
    /// looks, but without anything only an OpenID Provider has: Portcullis issues no ID tokens and has no authorization
    /// endpoint, so <c>response_types_supported</c> (required) is empty (docs/decisions.md, "Discovery"). Client
    /// authentication at the token, introspection and revocation endpoints is <c>client_secret_basic</c> or <c>client_secret_post</c>.
    /// </summary>
    /// <param name="exchangesTokens">Whether trusted issuers are configured, so that the token exchange is offered (docs/trusted-issuers.md).</param>
    internal static Dictionary<string, object> Discovery(string issuer, AuthOptions auth, bool exchangesTokens)
    {
        string[] clientAuth = ["client_secret_basic", "client_secret_post"];
        string[] grants = auth.PasswordGrant
            ? ["password", ClientCredentialsGrant.GrantType, DeviceGrant.GrantType]
            : [ClientCredentialsGrant.GrantType, DeviceGrant.GrantType];
        return new Dictionary<string, object>
        {
            ["issuer"] = issuer,
            ["token_endpoint"] = issuer + "/auth/token",
            ["device_authorization_endpoint"] = issuer + "/auth/device",
            ["jwks_uri"] = issuer + "/.well-known/jwks.json",
            ["introspection_endpoint"] = issuer + "/auth/introspect",
            ["revocation_endpoint"] = issuer + "/auth/revoke",
            ["grant_types_supported"] = exchangesTokens ? [.. grants, Federation.TokenExchangeGrant.GrantType] : grants,
            ["token_endpoint_auth_methods_supported"] = clientAuth,
            ["introspection_endpoint_auth_methods_supported"] = clientAuth,
            // The holder of a token may revoke it without authenticating (docs/decisions.md), hence "none".
            ["revocation_endpoint_auth_methods_supported"] = new[] { "none", "client_secret_basic", "client_secret_post" },
            ["scopes_supported"] = new[] { Scopes.Api, Scopes.Services, Scopes.Admin },
            ["response_types_supported"] = Array.Empty<string>(),
        };
    }

    /// <summary>The token endpoint's bodies and answers: a form answered as RFC 6749 says (200), JSON as Airflow does (201).</summary>
    private static RouteHandlerBuilder DescribedAsTokenEndpoint(this RouteHandlerBuilder endpoint) => endpoint
        .DocumentedBody<TokenRequest>("application/x-www-form-urlencoded", "application/json")
        .Produces<TokenEndpointResponse>(StatusCodes.Status200OK)
        .Produces<TokenEndpointResponse>(StatusCodes.Status201Created)
        .ProducesOAuthErrors();

    /// <summary>Introspection and revocation: a token parameter, optional client authentication, RFC 6749 errors.</summary>
    internal static RouteHandlerBuilder DescribedAsTokenParameterEndpoint(this RouteHandlerBuilder endpoint) => endpoint
        .DocumentedBody<TokenParameterRequest>("application/x-www-form-urlencoded", "application/json")
        .Produces<Dictionary<string, object>>(StatusCodes.Status200OK)
        .ProducesOAuthErrors();

    /// <summary>The RFC 6749 error answers of the OAuth endpoints.</summary>
    private static RouteHandlerBuilder ProducesOAuthErrors(this RouteHandlerBuilder endpoint) => endpoint
        .Produces<OAuthError>(StatusCodes.Status400BadRequest)
        .Produces<OAuthError>(StatusCodes.Status401Unauthorized)
        .Produces<OAuthError>(StatusCodes.Status403Forbidden)
        .Produces<OAuthError>(StatusCodes.Status429TooManyRequests)
        .Produces<OAuthError>(StatusCodes.Status503ServiceUnavailable);

    /// <summary>The OAuth endpoints take POST only; anything else gets an RFC 6749 error and <c>Allow</c>.</summary>
    internal static IResult MethodNotAllowed(HttpContext http)
    {
        http.Response.Headers.Allow = "POST";
        return TokenEndpoint.Error("invalid_request", "This endpoint accepts only POST.", StatusCodes.Status405MethodNotAllowed);
    }
}

/// <summary>Parses token requests and runs the grants. Each grant answers an RFC 6749 body.</summary>
internal sealed partial class TokenEndpoint(
    IServiceProvider services,
    PasswordHasher hasher,
    JwtService jwts,
    AuditLog audit,
    LoginThrottle throttle,
    IOptions<AuthOptions> authOptions,
    ILogger<TokenEndpoint> logger)
{
    private const int MaxParameterLength = 4096;

    /// <summary>Resolved on first use: a refused attempt never rents a database context.</summary>
    private PortcullisDb Db => field ??= services.GetRequiredService<PortcullisDb>();

    /// <param name="firstPartyClient">The client a password login names when it authenticates none (<see cref="FirstPartyClients"/>).</param>
    public async Task<IResult> HandleAsync(HttpContext http, TimeSpan lifetime, string firstPartyClient)
    {
        http.Response.Headers.CacheControl = "no-store";
        http.Response.Headers.Pragma = "no-cache";
        var result = await GrantAsync(http, lifetime, firstPartyClient);
        return http.Request.HasJsonContentType() ? AirflowStyle(result) : result;
    }

    private async Task<IResult> GrantAsync(HttpContext http, TimeSpan lifetime, string firstPartyClient)
    {
        var (parameters, parseError) = await ReadParametersAsync(http.Request);
        if (parseError is not null)
            return Error("invalid_request", parseError);

        var grant = parameters!.GetValueOrDefault("grant_type") ?? "password";
        return grant switch
        {
            "password" => await PasswordGrantAsync(http, parameters!, lifetime, firstPartyClient),
            ClientCredentialsGrant.GrantType => await http.RequestServices.GetRequiredService<ClientCredentialsGrant>().HandleAsync(http, parameters!),
            DeviceGrant.GrantType => await http.RequestServices.GetRequiredService<DeviceGrant>().PollAsync(http, parameters!),
            Federation.TokenExchangeGrant.GrantType => await http.RequestServices.GetRequiredService<Federation.TokenExchangeGrant>().HandleAsync(http, parameters!, Db),
            _ => Error("unsupported_grant_type", $"The grant type '{Truncate(grant)}' is not supported. Use 'password', 'client_credentials', " +
                                                 $"'{DeviceGrant.GrantType}' or '{Federation.TokenExchangeGrant.GrantType}'."),
        };
    }

    /// <summary>
    /// Airflow answers its token endpoint with 201 and errors with <c>detail</c>, and its clients check both (and the
    /// content type, exactly <c>application/json</c>). The same answer otherwise: status, fields, headers.
    /// </summary>
    private static IResult AirflowStyle(IResult result) => result switch
    {
        JsonHttpResult<TokenEndpointResponse> issued => TypedResults.Json(issued.Value, contentType: "application/json", statusCode: StatusCodes.Status201Created),
        JsonHttpResult<OAuthError> { Value: { } error } refused => TypedResults.Json(new AirflowError(error.Error, error.ErrorDescription, error.ErrorDescription),
            contentType: "application/json", statusCode: refused.StatusCode),
        _ => result,
    };

    private async Task<IResult> PasswordGrantAsync(HttpContext http, Dictionary<string, string> p, TimeSpan lifetime, string firstPartyClient)
    {
        if (!authOptions.Value.PasswordGrant)
        {
            return Error("unsupported_grant_type",
                "Password login through the API is switched off on this server. Log in to the web UI, create an API token under Tokens, " +
                "and send it as 'Authorization: Bearer <token>' (or use 'portcullis login --api-token-stdin').");
        }
        // RFC 6749 §3.2.1: client credentials that are presented are verified, whatever the grant; the token then names the client.
        var clientAuthentication = await http.RequestServices.GetRequiredService<ClientAuthenticator>().AuthenticateAsync(http, p, "password", http.RequestAborted);
        if (clientAuthentication.Error is { } clientError)
            return clientError;
        var username = p.GetValueOrDefault("username");
        var password = p.GetValueOrDefault("password");
        if (username is null || password is null)
            return Error("invalid_request", "The password grant needs 'username' and 'password'.");

        ScopeSet? requested = null;
        if (p.GetValueOrDefault("scope") is { } scope)
        {
            if (!ScopeSet.TryParse(scope.Split(' ', StringSplitOptions.RemoveEmptyEntries), out var parsed, out var scopeError))
                return Error("invalid_scope", scopeError!);
            requested = parsed;
        }

        // Throttled before the user is even looked up: the 429 is the same, and as quick, for every username.
        await using var attempt = await throttle.CheckAsync(LoginKind.Password, username, http, http.RequestAborted);
        if (attempt.IsThrottled)
            return Error("temporarily_unavailable", attempt.RefuseWith429(http.Response), StatusCodes.Status429TooManyRequests);

        var user = await PasswordLogin.CheckAsync(http, Db, hasher, audit, attempt, username, password, "api");
        if (user is null)
            return Error("invalid_grant", "The username or password is wrong, or the account is disabled.");

        var rights = PrincipalCache.ToState(user, 0).Rights;
        var scopes = rights;
        if (requested is not null)
        {
            if (!requested.IsSubsetOf(rights))
                return Error("invalid_scope", $"The requested scope '{requested}' exceeds what '{user.Username}' holds: '{rights}'.");
            scopes = requested;
        }
        var clientId = clientAuthentication.Client?.ClientId ?? clientAuthentication.PublicClientId ?? firstPartyClient;
        var issued = jwts.Issue(user.Username, scopes, lifetime, user.Id, user.CredentialVersion, clientId);
        Db.AuditEvents.Add(audit.Create(http, AuditEvents.LoginSucceeded, user.Username, user.Id, issued.Jti,
            new { path = "api", lifetime_seconds = issued.ExpiresIn, client_id = clientId }));
        await Db.SaveChangesAsync(http.RequestAborted);
        Log.Issued(logger, user.Username, issued.Jti);
        return TypedResults.Json(new TokenEndpointResponse(issued.AccessToken, "Bearer", issued.ExpiresIn, issued.Scopes.ToString()));
    }

    public static IResult Error(string error, string description, int status = StatusCodes.Status400BadRequest) =>
        TypedResults.Json(new OAuthError(error, description), OAuthJson.Default.OAuthError, statusCode: status);

    /// <summary>
    /// Reads the parameters from a JSON object or a form body (RFC 6749 §3.2). Empty values count as
    /// absent; a parameter sent twice is an error (§3.1).
    /// </summary>
    internal static async Task<(Dictionary<string, string>? Parameters, string? Error)> ReadParametersAsync(HttpRequest request)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        if (request.HasFormContentType)
        {
            IEnumerable<KeyValuePair<string, StringValues>> form;
            try
            {
                form = await ReadFormAsync(request);
            }
            catch (Exception e) when (e is InvalidDataException or IOException or BadHttpRequestException)
            {
                return (null, "The form body could not be read.");
            }
            foreach (var (key, values) in form)
            {
                if (values.Count > 1)
                    return (null, $"The parameter '{Truncate(key)}' was sent more than once.");
                if (values[0] is { Length: > 0 } value)
                    result[key] = value;
            }
            return Check(result);
        }
        if (request.ContentType is { } contentType && contentType.StartsWith("application/json", StringComparison.OrdinalIgnoreCase))
        {
            JsonDocument document;
            try
            {
                document = await JsonDocument.ParseAsync(request.Body, default, request.HttpContext.RequestAborted);
            }
            catch (Exception e) when (e is JsonException or DecoderFallbackException or ArgumentException)
            {
                return (null, "The body is not valid JSON.");
            }
            using (document)
            {
                if (document.RootElement.ValueKind != JsonValueKind.Object)
                    return (null, "The body must be a JSON object such as {\"username\": \"...\", \"password\": \"...\"}.");
                var seen = new HashSet<string>(StringComparer.Ordinal);
                foreach (var property in document.RootElement.EnumerateObject())
                {
                    if (!seen.Add(property.Name))
                        return (null, $"The parameter '{Truncate(property.Name)}' was sent more than once.");
                    if (property.Value.ValueKind == JsonValueKind.Null)
                        continue;
                    if (property.Value.ValueKind != JsonValueKind.String)
                        return (null, $"The parameter '{Truncate(property.Name)}' must be a string.");
                    // A lone UTF-16 surrogate (\ud800) is valid JSON syntax but no text: GetString refuses it.
                    if (!TryGetString(property.Value, out var value))
                        return (null, $"The parameter '{Truncate(property.Name)}' is not valid text.");
                    if (value is { Length: > 0 })
                        result[property.Name] = value;
                }
            }
            return Check(result);
        }
        return (null, "Send the parameters as application/x-www-form-urlencoded or application/json.");

        static bool TryGetString(JsonElement element, out string? value)
        {
            try
            {
                value = element.GetString();
                return true;
            }
            catch (InvalidOperationException)
            {
                value = null;
                return false;
            }
        }

        static (Dictionary<string, string>?, string?) Check(Dictionary<string, string> p) =>
            p.Values.Any(v => v.Length > MaxParameterLength) ? (null, "A parameter is too long.") : (p, null);
    }

    /// <summary>
    /// A plain urlencoded body is parsed straight from the body by the framework's own <see cref="FormPipeReader"/>, with
    /// its default limits (the form feature's too: no <c>FormOptions</c> are configured); the form feature itself, kept for
    /// multipart bodies and explicit charsets, costs a refused token request about 3 µs more, some 7% (docs/performance.md,
    /// "Under a flood").
    /// </summary>
    private static async Task<IEnumerable<KeyValuePair<string, StringValues>>> ReadFormAsync(HttpRequest request) =>
        string.Equals(request.ContentType, "application/x-www-form-urlencoded", StringComparison.OrdinalIgnoreCase)
            ? await new FormPipeReader(request.BodyReader).ReadFormAsync(request.HttpContext.RequestAborted)
            : await request.ReadFormAsync(request.HttpContext.RequestAborted);

    private static string Truncate(string s) => s.Length <= 64 ? s : s[..64] + "…";

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Issued an access token to {User} (jti {Jti})")]
        public static partial void Issued(ILogger logger, string user, string jti);
    }
}
