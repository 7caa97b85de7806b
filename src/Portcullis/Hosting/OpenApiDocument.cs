using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.OpenApi;
using Portcullis.Tokens;

namespace Portcullis.Hosting;

/// <summary>
/// What <c>/openapi/v1.json</c> says beyond what the framework infers from the handlers (docs/decisions.md, "The
/// OpenAPI document"): the Bearer scheme and which operations need it, the problem answers each operation really
/// gives, request bodies that are required (an absent or <c>null</c> body is a 400, not "nothing"), and properties
/// that are optional unless the API needs them. <c>OpenApiDocumentTests</c> walks every operation and fails on any
/// status the document does not list.
/// </summary>
internal static class OpenApiDocument
{
    public const string BearerScheme = "bearer";

    public static void Configure(OpenApiOptions options)
    {
        options.AddSchemaTransformer(TransformSchemaAsync);
        options.AddDocumentTransformer((document, _, _) =>
        {
            document.Info.Title = "Portcullis";
            foreach (var server in document.Servers ?? [])
                server.Url = server.Url?.TrimEnd('/');
            document.Info.Description = "API tokens, OAuth2-style token endpoint and gateway. Authenticate with 'Authorization: Bearer <token>': " +
                "an API token, a service token or an access token (JWT) from /auth/token.";
            document.Components ??= new OpenApiComponents();
            document.Components.SecuritySchemes ??= new Dictionary<string, IOpenApiSecurityScheme>();
            document.Components.Schemas ??= new Dictionary<string, IOpenApiSchema>();
            document.Components.Schemas["ProblemDetails"] = new OpenApiSchema
            {
                Type = JsonSchemaType.Object,
                Description = "RFC 9457 problem details; 'detail' says what was wrong and how to fix it.",
                Properties = new Dictionary<string, IOpenApiSchema>
                {
                    ["type"] = new OpenApiSchema { Type = JsonSchemaType.String },
                    ["title"] = new OpenApiSchema { Type = JsonSchemaType.String },
                    ["status"] = new OpenApiSchema { Type = JsonSchemaType.Integer },
                    ["detail"] = new OpenApiSchema { Type = JsonSchemaType.String },
                    ["errors"] = new OpenApiSchema
                    {
                        Type = JsonSchemaType.Object,
                        Description = "When a rule about one field was broken: that field's name, with the same message as 'detail'.",
                        AdditionalProperties = new OpenApiSchema { Type = JsonSchemaType.Array, Items = new OpenApiSchema { Type = JsonSchemaType.String } },
                    },
                },
            };
            document.Components.SecuritySchemes[BearerScheme] = new OpenApiSecurityScheme
            {
                Type = SecuritySchemeType.Http, Scheme = "bearer",
                Description = "An API token (pcp_…, pcs_…), or an access token (JWT) from /auth/token. 'Authorization: Token <token>' works too.",
            };
            return Task.CompletedTask;
        });
        options.AddOperationTransformer(async (operation, context, cancellationToken) =>
        {
            var api = context.Description;
            var route = $"{api.HttpMethod} /{api.RelativePath?.TrimEnd('/')}";
            operation.Summary ??= Summaries.GetValueOrDefault(route) ?? route;
            var metadata = api.ActionDescriptor.EndpointMetadata;
            if (metadata.OfType<DocumentedBody>().FirstOrDefault() is { } documented)
            {
                var schema = await context.GetOrCreateSchemaAsync(documented.Type, cancellationToken: cancellationToken);
                operation.RequestBody = new OpenApiRequestBody
                {
                    Required = true,
                    Content = documented.ContentTypes.ToDictionary(c => c, _ => new OpenApiMediaType { Schema = schema }),
                };
            }
            var authenticated = metadata.OfType<IAuthorizeData>().Any() && !metadata.OfType<IAllowAnonymous>().Any();
            if (authenticated)
            {
                operation.Security = [new OpenApiSecurityRequirement { [new OpenApiSecuritySchemeReference(BearerScheme, context.Document)] = [] }];
                AddProblem(operation, StatusCodes.Status401Unauthorized, "No credential, or one that is invalid, expired or revoked.");
                AddProblem(operation, StatusCodes.Status403Forbidden, "The credential lacks the scope, or may not do this (an OAuth client's own token).");
                AddProblem(operation, StatusCodes.Status503ServiceUnavailable, "The credential cannot be checked: the database does not answer.");
            }
            else
            {
                // Anyone may call it (an empty requirement); it may still read a credential, as forward-auth and introspection do.
                operation.Security = [new OpenApiSecurityRequirement()];
            }
            foreach (var parameter in operation.Parameters ?? [])
            {
                if (parameter is OpenApiParameter { Schema: OpenApiSchema schema } && ParameterLimits.TryGetValue(parameter.Name ?? "", out var limit))
                    limit(schema);
            }
            if (operation.RequestBody is { } body)
            {
                // A nullable body parameter is inferred as "null or the object"; null is refused, so the object it is.
                foreach (var media in body.Content?.Values ?? [])
                {
                    if (media is OpenApiMediaType { Schema: OpenApiSchema { OneOf: { Count: 2 } options } } nullable)
                        nullable.Schema = options.First(o => o is not OpenApiSchema { Type: JsonSchemaType.Null });
                }
                // An absent or null body is refused (400), whatever the framework infers from a nullable parameter.
                if (body is OpenApiRequestBody concrete)
                    concrete.Required = true;
                AddProblem(operation, StatusCodes.Status400BadRequest, "The body or a parameter is invalid; the detail says how to fix it.");
                AddProblem(operation, StatusCodes.Status413PayloadTooLarge, "The body is larger than the server accepts.");
            }
            if (operation.Parameters?.Count > 0)
                AddProblem(operation, StatusCodes.Status400BadRequest, "A parameter is invalid; the detail says how to fix it.");
            if (operation.Parameters?.Any(p => p.In == ParameterLocation.Path) == true)
                AddProblem(operation, StatusCodes.Status404NotFound, "Nothing by that name or id that the caller may see.");
            foreach (var (status, description) in metadata.OfType<ProblemAnswers>().SelectMany(p => p.Problems))
                AddProblem(operation, status, description);
        });
    }

    /// <summary>One line per operation, as the document's readers (and linters) expect.</summary>
    private static readonly Dictionary<string, string> Summaries = new()
    {
        ["GET /healthz"] = "Liveness: the process answers",
        ["GET /readyz"] = "Readiness: the database answers",
        ["GET /metrics"] = "Prometheus metrics",
        ["GET /auth/verify"] = "Forward-auth for nginx, Caddy and Traefik",
        ["HEAD /auth/verify"] = "Forward-auth, without a body",
        ["POST /auth/token"] = "Token endpoint: password and client-credentials grants (1 h access tokens)",
        ["POST /auth/token/cli"] = "Token endpoint for the CLI (7 day access tokens)",
        ["POST /auth/device"] = "Device authorization (RFC 8628): a code for a person to approve at /device",
        ["POST /auth/introspect"] = "Token introspection (RFC 7662)",
        ["POST /auth/revoke"] = "Token revocation (RFC 7009)",
        ["GET /.well-known/jwks.json"] = "Public keys of the JWT signing keys",
        ["GET /.well-known/oauth-authorization-server"] = "Authorization server metadata (RFC 8414)",
        ["GET /.well-known/openid-configuration"] = "The same metadata at the OpenID Connect discovery path",
        ["POST /api/v1/tokens"] = "Create an API token (its secret is shown once)",
        ["GET /api/v1/tokens"] = "List tokens: your own, or as an admin anyone's",
        ["GET /api/v1/tokens/{id:long}"] = "One token, without its secret",
        ["DELETE /api/v1/tokens/{id:long}"] = "Revoke a token",
        ["POST /api/v1/tokens/{id:long}/rotate"] = "Rotate a token: a successor, and the old one ends (after a grace period)",
        ["GET /api/v1/tokens/{id:long}/usage"] = "A token's use per day",
        ["GET /api/v1/users"] = "List users and services (admin)",
        ["POST /api/v1/users"] = "Create a user (admin)",
        ["GET /api/v1/users/{name}"] = "One user (admin)",
        ["PATCH /api/v1/users/{name}"] = "Change a user: admin, disabled, password (admin)",
        ["DELETE /api/v1/users/{name}"] = "Delete a user and end their credentials (admin)",
        ["GET /api/v1/audit"] = "The audit log, newest first, a page at a time",
        ["POST /api/v1/clients"] = "Create an OAuth client (its secret is shown once)",
        ["GET /api/v1/clients"] = "List OAuth clients",
        ["GET /api/v1/clients/{clientId}"] = "One OAuth client",
        ["DELETE /api/v1/clients/{clientId}"] = "Delete an OAuth client; its tokens end",
        ["POST /api/v1/clients/{clientId}/rotate-secret"] = "A new client secret; the old one and its tokens end",
        ["GET /api/v1/keys"] = "JWT signing keys (admin)",
        ["POST /api/v1/keys/rotate"] = "Rotate the JWT signing key (admin)",
        ["GET /api/v1/managed-services"] = "State of the processes Portcullis runs (admin)",
        ["GET /api/v1/me"] = "Who the credential belongs to, and what it may do",
        ["POST /api/v1/me/password"] = "Change your password",
        ["GET /api/v1/services"] = "Services you may reach",
        ["POST /api/v1/services"] = "Register a service (admin)",
        ["DELETE /api/v1/services/{key}"] = "Remove a service registered through the API (admin)",
    };

    /// <summary>Limits the handlers enforce on query and route parameters, by parameter name.</summary>
    private static readonly Dictionary<string, Action<OpenApiSchema>> ParameterLimits = new()
    {
        ["limit"] = s => (s.Minimum, s.Maximum) = ("1", "1000"),   // GET /api/v1/audit
        ["days"] = s => (s.Minimum, s.Maximum) = ("1", "366"),     // GET /api/v1/tokens/{id}/usage
        ["key"] = s => s.Pattern = "^[a-z0-9-]+_[A-Za-z0-9.-]+$",  // DELETE /api/v1/services/{name}_{version}
    };

    /// <summary>
    /// Request bodies: only what the API needs is required (a record's constructor makes every property look required),
    /// and the limits it enforces on the rest.
    /// </summary>
    public static Task TransformSchemaAsync(OpenApiSchema schema, OpenApiSchemaTransformerContext context, CancellationToken cancellationToken)
    {
        var type = context.JsonTypeInfo.Type;
        if (!type.Name.EndsWith("Request", StringComparison.Ordinal) && type != typeof(TokenRateLimit))
            return Task.CompletedTask;
        schema.Required = new HashSet<string>(RequiredProperties.GetValueOrDefault(type.Name) ?? []);
        var tokens = context.ApplicationServices.GetRequiredService<Microsoft.Extensions.Options.IOptions<TokenOptions>>().Value;
        void Limit(string property, Action<OpenApiSchema> limit)
        {
            if (schema.Properties is { } properties && properties.TryGetValue(property, out var found) && found is OpenApiSchema p)
                limit(p);
        }
        switch (type.Name)
        {
            case "CreateTokenRequest":
                Limit("name", p => p.MaxLength = Tokens.TokensApi.MaxNameLength);
                Limit("description", p => p.MaxLength = Tokens.TokensApi.MaxDescriptionLength);
                Limit("expires_in_days", p => (p.Minimum, p.Maximum) = ("1", (tokens.MaxLifetimeDays ?? 36_500).ToString(System.Globalization.CultureInfo.InvariantCulture)));
                Limit("max_uses", p => (p.Minimum, p.Maximum) = ("1", Tokens.TokensApi.MaxUsesLimit.ToString(System.Globalization.CultureInfo.InvariantCulture)));
                Limit(Tokens.AllowedSources.Field, p => (p.MinItems, p.MaxItems) = (1, Tokens.AllowedSources.MaxRanges));
                break;
            case nameof(TokenRateLimit):
                Limit("per_second", p => (p.Minimum, p.Maximum) = ("1", Tokens.TokensApi.MaxPerSecond.ToString(System.Globalization.CultureInfo.InvariantCulture)));
                Limit("per_minute", p => (p.Minimum, p.Maximum) = ("1", Tokens.TokensApi.MaxPerMinute.ToString(System.Globalization.CultureInfo.InvariantCulture)));
                break;
            case "RotateTokenRequest":
                Limit("grace_seconds", p => (p.Minimum, p.Maximum) = ("0", ((long)tokens.MaxRotationGrace.TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture)));
                break;
            case "RegisterServiceRequest":
                Limit("name", p => p.Pattern = "^[a-z0-9-]+$");
                Limit("version", p => p.Pattern = "^[A-Za-z0-9.-]+$");
                Limit("description", p => p.MaxLength = Gateway.ServicesApi.MaxDescriptionLength);
                break;
        }
        return Task.CompletedTask;
    }

    private static readonly Dictionary<string, string[]> RequiredProperties = new()
    {
        ["CreateTokenRequest"] = ["name"],
        ["CreateUserRequest"] = ["username", "password"],
        ["CreateClientRequest"] = ["name", "scopes"],
        ["ChangePasswordRequest"] = ["current_password", "new_password"],
        ["RegisterServiceRequest"] = ["name", "version"],
        ["HealthCheckRequest"] = ["path"],
        ["DeviceAuthorizationRequest"] = ["client_id"],
    };

    private static void AddProblem(OpenApiOperation operation, int status, string description)
    {
        operation.Responses ??= new OpenApiResponses();
        var key = status.ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (operation.Responses.ContainsKey(key))
            return;
        operation.Responses[key] = new OpenApiResponse
        {
            Description = description,
            Content = new Dictionary<string, OpenApiMediaType>
            {
                ["application/problem+json"] = new() { Schema = new OpenApiSchemaReference("ProblemDetails") },
            },
        };
    }
}

/// <summary>
/// A body the handler reads itself (the OAuth endpoints parse forms and JSON by RFC 6749's rules), described without
/// <c>Accepts</c>, which would have the framework answer other content types 415 instead of the RFC's 400 <c>invalid_request</c>.
/// </summary>
internal sealed record DocumentedBody(Type Type, string[] ContentTypes);

/// <summary>Problem answers an endpoint gives beyond those every authenticated endpoint or body may give (<see cref="OpenApiDocument"/>).</summary>
internal sealed record ProblemAnswers(IReadOnlyList<(int Status, string Description)> Problems);

internal static class ProblemAnswersExtensions
{
    /// <summary>Documents problem answers of this endpoint (each status with what it means).</summary>
    public static TBuilder Answers<TBuilder>(this TBuilder builder, params (int Status, string Description)[] problems) where TBuilder : IEndpointConventionBuilder =>
        builder.WithMetadata(new ProblemAnswers(problems));

    /// <summary>Documents the body the handler reads itself (<see cref="DocumentedBody"/>).</summary>
    public static RouteHandlerBuilder DocumentedBody<T>(this RouteHandlerBuilder builder, params string[] contentTypes) =>
        builder.WithMetadata(new DocumentedBody(typeof(T), contentTypes));
}
