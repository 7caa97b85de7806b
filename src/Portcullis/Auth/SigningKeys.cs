using System.Security.Cryptography;
using System.Data.Common;
using Microsoft.IdentityModel.Tokens;
using Portcullis.Audit;
using Portcullis.Data;

namespace Portcullis.Auth;

/// <summary>
/// The ES256 keys that sign and verify JWTs. Created on first start and kept in the database so that
/// every instance signs with the same key. The newest unretired key signs; all keys verify until
/// retired keys outlive the longest token lifetime.
/// </summary>
internal sealed class SigningKeys(TimeProvider time, AuditLog audit, ILogger<SigningKeys> logger)
{
    public const string Algorithm = SecurityAlgorithms.EcdsaSha256;

    private volatile KeySet _keys = new(new Dictionary<string, ECDsaSecurityKey>(), null);

    private sealed record KeySet(IReadOnlyDictionary<string, ECDsaSecurityKey> ByKid, SigningCredentials? Current);

    public SigningCredentials Current => _keys.Current ?? throw new InvalidOperationException("No signing key loaded.");

    public ECDsaSecurityKey? Find(string kid) => _keys.ByKid.GetValueOrDefault(kid);

    public IEnumerable<ECDsaSecurityKey> All => _keys.ByKid.Values;

    /// <summary>Loads the keys, creating the first one when the database has none.</summary>
    public async Task LoadAsync(DbConnection connection, CancellationToken cancellationToken)
    {
        var rows = await ReadAsync(connection, cancellationToken);
        if (rows.Count == 0)
        {
            await CreateAsync(connection, cancellationToken);
            // Re-read: another instance may have created one at the same moment.
            rows = await ReadAsync(connection, cancellationToken);
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

    private static async Task<List<SigningKey>> ReadAsync(DbConnection connection, CancellationToken cancellationToken)
    {
        var rows = new List<SigningKey>();
        await using var cmd = Sql.Command(connection, "SELECT kid, algorithm, private_key, created_at, retired_at FROM signing_keys");
        await using var reader = await cmd.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            rows.Add(new SigningKey
            {
                Kid = reader.GetString(0),
                Algorithm = reader.GetString(1),
                PrivateKey = reader.GetString(2),
                CreatedAt = Sql.Utc(reader, 3),
                RetiredAt = reader.IsDBNull(4) ? null : Sql.Utc(reader, 4),
            });
        }
        return rows;
    }

    private async Task CreateAsync(DbConnection connection, CancellationToken cancellationToken)
    {
        using var ecdsa = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var kid = Base64UrlEncoder.Encode(RandomNumberGenerator.GetBytes(12));
        var e = audit.Create(null, AuditEvents.SigningKeyCreated, details: new { kid });
        await using var tx = await connection.BeginTransactionAsync(cancellationToken);
        await using (var insert = Sql.Command(connection,
            "INSERT INTO signing_keys (kid, algorithm, private_key, created_at) VALUES (@kid, @alg, @key, @at)",
            ("@kid", kid), ("@alg", Algorithm), ("@key", Convert.ToBase64String(ecdsa.ExportPkcs8PrivateKey())), ("@at", time.GetUtcNow().UtcDateTime)))
        {
            insert.Transaction = tx;
            await insert.ExecuteNonQueryAsync(cancellationToken);
        }
        await using (var record = Sql.Command(connection,
            "INSERT INTO audit_events (occurred_at, event, details) VALUES (@at, @event, @details)",
            ("@at", e.OccurredAt), ("@event", e.Event), ("@details", e.Details)))
        {
            record.Transaction = tx;
            await record.ExecuteNonQueryAsync(cancellationToken);
        }
        await tx.CommitAsync(cancellationToken);
        logger.LogInformation("Created JWT signing key {Kid}", kid);
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
