using Microsoft.AspNetCore.Http.HttpResults;
using Portcullis.Data;

namespace Portcullis.Auth;

/// <summary>The API's signing-key record (Portcullis.Client/ApiRecords.cs) made from a key's metadata.</summary>
internal static class SigningKeyRecords
{
    extension(SigningKeyResponse)
    {
        public static SigningKeyResponse From(SigningKeys.KeyInfo k) =>
            new(k.Kid, k.Alg, k.CreatedAt, k.RetiredAt, k.Signing ? "signing" : k.RetiredAt is null ? "verifying" : "retired");
    }
}

/// <summary>
/// JWT signing keys (admin): <c>GET /api/v1/keys</c> and <c>POST /api/v1/keys/rotate</c> (docs/decisions.md).
/// Metadata only; key material never leaves the server except as the public JWKS.
/// </summary>
internal static class KeysApi
{
    public static RouteGroupBuilder MapKeys(this RouteGroupBuilder api)
    {
        var keys = api.MapGroup("/keys").WithTags("Keys").RequireAuthorization(Policies.Admin);
        keys.MapGet("/", (SigningKeys signingKeys) => TypedResults.Ok(signingKeys.Info.Select(SigningKeyResponse.From).ToArray()));
        keys.MapPost("/rotate", RotateAsync).NotForClientCredentials();
        return keys;
    }

    /// <summary>
    /// The new key signs from now on, here and (once told) on every other instance. Tokens signed by
    /// the previous keys keep verifying until they expire; their keys stay in the JWKS until then.
    /// </summary>
    private static async Task<Ok<KeyRotationResponse>> RotateAsync(
        HttpContext http, SigningKeys signingKeys, InvalidationBus invalidation, CancellationToken cancellationToken)
    {
        var kid = await signingKeys.RotateAsync(http, cancellationToken);
        await invalidation.SigningKeysChangedAsync(cancellationToken);
        return TypedResults.Ok(new KeyRotationResponse(kid, signingKeys.Info.Select(SigningKeyResponse.From).ToArray()));
    }
}
