using System.Security.Cryptography;
using Microsoft.EntityFrameworkCore;
using Microsoft.IdentityModel.Tokens;
using Portcullis.Audit;
using Portcullis.Data;

namespace Portcullis.Auth;

/// <summary>
/// The ES256 keys that sign and verify JWTs. Created on first start and kept in the database so that
/// every instance signs with the same key. The newest unretired key signs; all keys verify until
/// retired keys outlive the longest token lifetime.
/// </summary>
internal sealed class SigningKeys(IServiceScopeFactory scopes, TimeProvider time, AuditLog audit, ILogger<SigningKeys> logger)
{
    public const string Algorithm = SecurityAlgorithms.EcdsaSha256;

    private volatile KeySet _keys = new(new Dictionary<string, ECDsaSecurityKey>(), null);

    private sealed record KeySet(IReadOnlyDictionary<string, ECDsaSecurityKey> ByKid, SigningCredentials? Current);

    public SigningCredentials Current => _keys.Current ?? throw new InvalidOperationException("No signing key loaded.");

    public ECDsaSecurityKey? Find(string kid) => _keys.ByKid.GetValueOrDefault(kid);

    public IEnumerable<ECDsaSecurityKey> All => _keys.ByKid.Values;

    /// <summary>Loads the keys, creating the first one when the database has none.</summary>
    public async Task LoadAsync(CancellationToken cancellationToken)
    {
        await using var scope = scopes.CreateAsyncScope();
        var db = scope.ServiceProvider.GetRequiredService<PortcullisDb>();
        var rows = await db.SigningKeys.AsNoTracking().ToListAsync(cancellationToken);
        if (rows.Count == 0)
        {
            await CreateAsync(db, cancellationToken);
            // Re-read: another instance may have created one at the same moment.
            rows = await db.SigningKeys.AsNoTracking().ToListAsync(cancellationToken);
        }
        var byKid = new Dictionary<string, ECDsaSecurityKey>(StringComparer.Ordinal);
        foreach (var row in rows)
        {
            var ecdsa = ECDsa.Create();
            ecdsa.ImportPkcs8PrivateKey(Convert.FromBase64String(row.PrivateKey), out _);
            byKid[row.Kid] = new ECDsaSecurityKey(ecdsa) { KeyId = row.Kid };
        }
        // Newest unretired key signs. Ties (two instances creating the first key at once) break by kid,
        // so every instance makes the same choice and all of them verify both keys.
        var current = rows.Where(r => r.RetiredAt is null).OrderByDescending(r => r.CreatedAt).ThenBy(r => r.Kid, StringComparer.Ordinal).FirstOrDefault()
            ?? rows.OrderByDescending(r => r.CreatedAt).First();
        _keys = new KeySet(byKid, new SigningCredentials(byKid[current.Kid], Algorithm));
    }

    private async Task<SigningKey> CreateAsync(PortcullisDb db, CancellationToken cancellationToken)
    {
        using var ecdsa = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var row = new SigningKey
        {
            Kid = Base64UrlEncoder.Encode(RandomNumberGenerator.GetBytes(12)),
            Algorithm = Algorithm,
            PrivateKey = Convert.ToBase64String(ecdsa.ExportPkcs8PrivateKey()),
            CreatedAt = time.GetUtcNow().UtcDateTime,
        };
        db.SigningKeys.Add(row);
        db.AuditEvents.Add(audit.Create(null, AuditEvents.SigningKeyCreated, details: new { kid = row.Kid }));
        try
        {
            await db.SaveChangesAsync(cancellationToken);
            logger.LogInformation("Created JWT signing key {Kid}", row.Kid);
            return row;
        }
        catch (DbUpdateException)
        {
            // Another instance created the first key at the same moment; use theirs.
            db.ChangeTracker.Clear();
            return await db.SigningKeys.AsNoTracking().OrderBy(k => k.CreatedAt).FirstAsync(cancellationToken);
        }
    }

    /// <summary>Public keys as a JWKS document (RFC 7517); never a private member.</summary>
    public object Jwks() => new
    {
        keys = All.Select(k =>
        {
            var p = k.ECDsa.ExportParameters(includePrivateParameters: false);
            return new Dictionary<string, string>
            {
                ["kty"] = "EC",
                ["crv"] = "P-256",
                ["x"] = Base64UrlEncoder.Encode(p.Q.X!),
                ["y"] = Base64UrlEncoder.Encode(p.Q.Y!),
                ["kid"] = k.KeyId,
                ["use"] = "sig",
                ["alg"] = Algorithm,
            };
        }).ToArray(),
    };
}
