using System.Data.Common;
using System.Security.Cryptography;
using System.Text;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.Tokens;
using Portcullis.Audit;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;

namespace Portcullis.Auth;

/// <summary>A signing key's public half and the one algorithm it verifies; a token naming another algorithm is refused.</summary>
internal sealed record VerificationKey(AsymmetricSecurityKey Key, string Algorithm);

/// <summary>
/// The keys that sign and verify JWTs: ES256, or RS256 when <c>Jwt:SigningAlgorithm</c> says so (each key keeps the
/// algorithm it was made for). Created on first start and kept in the database so that
/// every instance signs with the same key. The newest unretired key signs; a rotation retires the
/// others, which keep verifying (and stay in the JWKS) until every token they signed has expired,
/// and are then pruned. Other instances reload when told of a rotation, or when a JWT names a
/// <c>kid</c> they do not know (at most once per <see cref="UnknownKidReloadInterval"/>). The private keys are stored
/// sealed (<see cref="KeySealing"/>); a row that does not unseal is never used.
/// </summary>
internal sealed class SigningKeys(IDbContextFactory<PortcullisDb> dbs, TimeProvider time, AuditLog audit, KeySealing sealing, IOptions<JwtOptions> options,
    ILogger<SigningKeys> logger)
{
    public const string Es256 = SecurityAlgorithms.EcdsaSha256;
    public const string Rs256 = SecurityAlgorithms.RsaSha256;
    public static readonly IReadOnlySet<string> Algorithms = new HashSet<string>(StringComparer.Ordinal) { Es256, Rs256 };

    /// <summary>An unknown <c>kid</c> costs at most one database read per this interval, however many arrive.</summary>
    public static readonly TimeSpan UnknownKidReloadInterval = TimeSpan.FromSeconds(5);

    private volatile KeySet _keys = new(new Dictionary<string, VerificationKey>(), null, []);
    private volatile bool _loaded;
    // Far in the past, but not so far that "now - last" overflows.
    private long _lastUnknownKidReload = long.MinValue / 2;
    private readonly SemaphoreSlim _reloadLock = new(1, 1);

    private sealed record KeySet(IReadOnlyDictionary<string, VerificationKey> ByKid, SigningCredentials? Current, IReadOnlyList<KeyInfo> Info);

    /// <summary>A key as listed by <c>/api/v1/keys</c>: never the key material.</summary>
    internal sealed record KeyInfo(string Kid, string Alg, DateTime CreatedAt, DateTime? RetiredAt, bool Signing);

    public SigningCredentials Current => _keys.Current ?? throw new InvalidOperationException("No signing key loaded.");

    public VerificationKey? Find(string kid) => _keys.ByKid.GetValueOrDefault(kid);

    public IReadOnlyList<KeyInfo> Info => _keys.Info;

    /// <summary>
    /// How long a retired key must keep verifying: the longest lifetime a JWT can have, plus the
    /// clock skew. After that every token it signed has expired and the key is pruned.
    /// </summary>
    private TimeSpan Retention =>
        (options.Value.CliTokenLifetime > options.Value.AccessTokenLifetime ? options.Value.CliTokenLifetime : options.Value.AccessTokenLifetime)
        + options.Value.ClockSkew;

    /// <summary>Loads the keys, creating the first one when the database has none that this server can unseal.</summary>
    public async Task LoadAsync(DbConnection connection, CancellationToken cancellationToken)
    {
        var rows = await ReadAsync(connection, cancellationToken);
        if (rows.Count == 0)
        {
            await CreateAsync(connection, null, retireOthers: false, cancellationToken);
            // Re-read: another instance may have created one at the same moment.
            rows = await ReadAsync(connection, cancellationToken);
        }
        Apply(rows);
        _loaded = true;
    }

    /// <summary>Re-reads the keys (after a rotation elsewhere); a no-op before the start-up load.</summary>
    public async Task ReloadAsync(CancellationToken cancellationToken)
    {
        if (!_loaded)
            return;
        await _reloadLock.WaitAsync(cancellationToken);
        try
        {
            await using var db = await dbs.CreateDbContextAsync(cancellationToken);
            await db.Database.OpenConnectionAsync(cancellationToken);
            var rows = await ReadAsync(db.Database.GetDbConnection(), cancellationToken);
            if (rows.Count > 0)
                Apply(rows);
        }
        catch (Exception e) when (DatabaseFailures.IsDatabaseFailure(e))
        {
            logger.LogWarning("Could not re-read the JWT signing keys: {Error}", e.Message);
        }
        finally
        {
            _reloadLock.Release();
        }
    }

    /// <summary>
    /// Looks for a <c>kid</c> this instance does not know: another instance may have rotated the key
    /// and the notification not arrived yet. Rate-limited, so made-up kids cannot hammer the database.
    /// </summary>
    public async ValueTask<VerificationKey?> FindOrReloadAsync(string kid, CancellationToken cancellationToken)
    {
        if (Find(kid) is { } known)
            return known;
        var now = Environment.TickCount64;
        var last = Interlocked.Read(ref _lastUnknownKidReload);
        if (now - last < (long)UnknownKidReloadInterval.TotalMilliseconds || Interlocked.CompareExchange(ref _lastUnknownKidReload, now, last) != last)
            return null;
        await ReloadAsync(cancellationToken);
        return Find(kid);
    }

    /// <summary>
    /// Creates a new key that signs from now on, retires the others and prunes retired keys whose
    /// tokens have all expired. Returns the new kid. The caller tells other instances.
    /// </summary>
    public async Task<string> RotateAsync(HttpContext? http, CancellationToken cancellationToken)
    {
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        await db.Database.OpenConnectionAsync(cancellationToken);
        var connection = db.Database.GetDbConnection();
        var kid = await CreateAsync(connection, http, retireOthers: true, cancellationToken);
        Apply(await ReadAsync(connection, cancellationToken));
        return kid;
    }

    /// <summary>Deletes retired keys that can no longer verify anything (every token they signed has expired).</summary>
    public async Task PruneAsync(CancellationToken cancellationToken)
    {
        if (!_loaded)
            return;
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        var before = time.GetUtcNow().UtcDateTime - Retention;
        var pruned = await db.SigningKeys.Where(k => k.RetiredAt != null && k.RetiredAt < before).ExecuteDeleteAsync(cancellationToken);
        if (pruned > 0)
        {
            logger.LogInformation("Pruned {Count} retired JWT signing keys", pruned);
            await db.Database.OpenConnectionAsync(cancellationToken);
            Apply(await ReadAsync(db.Database.GetDbConnection(), cancellationToken));
        }
    }

    private void Apply(List<(SigningKey Row, VerificationKey Key)> rows)
    {
        var byKid = new Dictionary<string, VerificationKey>(StringComparer.Ordinal);
        var expiredBefore = time.GetUtcNow().UtcDateTime - Retention;
        foreach (var (row, key) in rows)
        {
            // A retired key past its retention verifies nothing that is still valid; it awaits pruning.
            if (row.RetiredAt is { } retired && retired < expiredBefore)
                continue;
            byKid[row.Kid] = key;
        }
        // Newest unretired key signs. Ties (two instances creating a key at once) break by kid,
        // so every instance makes the same choice and all of them verify both keys.
        var (current, currentKey) = rows.Where(r => r.Row.RetiredAt is null).OrderByDescending(r => r.Row.CreatedAt).ThenBy(r => r.Row.Kid, StringComparer.Ordinal).FirstOrDefault() is { Row: not null } newest
            ? newest
            : rows.OrderByDescending(r => r.Row.CreatedAt).First();
        byKid[current.Kid] = currentKey;
        var info = rows.Select(r => r.Row).Where(r => byKid.ContainsKey(r.Kid))
            .OrderByDescending(r => r.CreatedAt).ThenBy(r => r.Kid, StringComparer.Ordinal)
            .Select(r => new KeyInfo(r.Kid, r.Algorithm, r.CreatedAt, r.RetiredAt, r.Kid == current.Kid))
            .ToArray();
        _keys = new KeySet(byKid, new SigningCredentials(currentKey.Key, currentKey.Algorithm), info);
    }

    /// <summary>The stored keys this server can unseal; any other row is left alone and never used.</summary>
    private async Task<List<(SigningKey Row, VerificationKey Key)>> ReadAsync(DbConnection connection, CancellationToken cancellationToken)
    {
        var rows = new List<(SigningKey, VerificationKey)>();
        await using var cmd = Sql.Command(connection, "SELECT kid, algorithm, private_key, created_at, retired_at FROM signing_keys");
        await using var reader = await cmd.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            var row = new SigningKey
            {
                Kid = reader.GetString(0),
                Algorithm = reader.GetString(1),
                PrivateKey = reader.GetString(2),
                CreatedAt = Sql.Utc(reader, 3),
                RetiredAt = reader.IsDBNull(4) ? null : Sql.Utc(reader, 4),
            };
            // Sealed is the text that was stored before sealing: the PKCS#8 key in base64.
            if (sealing.Unseal(row.PrivateKey, KeySealing.SigningKeys, row.Kid) is not { } text)
            {
                logger.LogError("Signing key {Kid} in the database is not sealed with a key-encryption key of this server (written there by hand?): not used", row.Kid);
                continue;
            }
            if (!Algorithms.Contains(row.Algorithm))
            {
                logger.LogError("Signing key {Kid} in the database is for {Algorithm}, which this server does not use: not used", row.Kid, row.Algorithm);
                continue;
            }
            var pkcs8 = Convert.FromBase64String(Encoding.ASCII.GetString(text));
            AsymmetricSecurityKey key;
            if (row.Algorithm == Rs256)
            {
                var rsa = RSA.Create();
                rsa.ImportPkcs8PrivateKey(pkcs8, out _);
                key = new RsaSecurityKey(rsa) { KeyId = row.Kid };
            }
            else
            {
                var ecdsa = ECDsa.Create();
                ecdsa.ImportPkcs8PrivateKey(pkcs8, out _);
                key = new ECDsaSecurityKey(ecdsa) { KeyId = row.Kid };
            }
            CryptographicOperations.ZeroMemory(pkcs8);
            CryptographicOperations.ZeroMemory(text);
            rows.Add((row, new VerificationKey(key, row.Algorithm)));
        }
        return rows;
    }

    /// <summary>Inserts a new key (retiring the others and pruning expired ones when rotating) with its audit event, in one transaction.</summary>
    private async Task<string> CreateAsync(DbConnection connection, HttpContext? http, bool retireOthers, CancellationToken cancellationToken)
    {
        var algorithm = options.Value.SigningAlgorithm;
        using AsymmetricAlgorithm pair = algorithm == Rs256 ? RSA.Create(2048) : ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var kid = Base64UrlEncoder.Encode(RandomNumberGenerator.GetBytes(12));
        var now = time.GetUtcNow().UtcDateTime;
        await using var tx = await connection.BeginTransactionAsync(cancellationToken);
        var retired = new List<string>();
        if (retireOthers)
        {
            await using (var select = Sql.Command(connection, tx, "SELECT kid FROM signing_keys WHERE retired_at IS NULL"))
            {
                await using var reader = await select.ExecuteReaderAsync(cancellationToken);
                while (await reader.ReadAsync(cancellationToken))
                    retired.Add(reader.GetString(0));
            }
            await Execute("UPDATE signing_keys SET retired_at = @at WHERE retired_at IS NULL", ("@at", now));
            await Execute("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < @before", ("@before", now - Retention));
        }
        await Execute("INSERT INTO signing_keys (kid, algorithm, private_key, created_at) VALUES (@kid, @alg, @key, @at)",
            ("@kid", kid), ("@alg", algorithm), ("@key", sealing.Seal(Encoding.ASCII.GetBytes(Convert.ToBase64String(pair.ExportPkcs8PrivateKey())), KeySealing.SigningKeys, kid)), ("@at", now));
        var e = retireOthers
            ? audit.Create(http, AuditEvents.SigningKeyRotated, details: new { kid, algorithm, retired })
            : audit.Create(http, AuditEvents.SigningKeyCreated, details: new { kid, algorithm });
        await Execute("INSERT INTO audit_events (occurred_at, event, actor, actor_id, token_id, client_ip, details) VALUES (@at, @event, @actor, @actor_id, @token_id, @ip, @details)",
            ("@at", e.OccurredAt), ("@event", e.Event), ("@actor", e.Actor), ("@actor_id", e.ActorId), ("@token_id", e.TokenId), ("@ip", e.ClientIp), ("@details", e.Details));
        await tx.CommitAsync(cancellationToken);
        logger.LogInformation(retireOthers ? "Rotated the JWT signing key: {Kid} signs from now on" : "Created JWT signing key {Kid}", kid);
        return kid;

        Task Execute(string sql, params (string, object?)[] parameters) => Sql.ExecuteAsync(connection, tx, sql, cancellationToken, parameters);
    }

    /// <summary>One public key as a JWK (RFC 7517, RFC 7518 §6): only the public parameters are ever read.</summary>
    private static Dictionary<string, string> PublicJwk(VerificationKey k)
    {
        var jwk = new Dictionary<string, string>();
        if (k.Key is RsaSecurityKey rsa)
        {
            var p = rsa.Rsa.ExportParameters(includePrivateParameters: false);
            (jwk["kty"], jwk["n"], jwk["e"]) = ("RSA", Base64UrlEncoder.Encode(p.Modulus!), Base64UrlEncoder.Encode(p.Exponent!));
        }
        else
        {
            var p = ((ECDsaSecurityKey)k.Key).ECDsa.ExportParameters(includePrivateParameters: false);
            (jwk["kty"], jwk["crv"], jwk["x"], jwk["y"]) = ("EC", "P-256", Base64UrlEncoder.Encode(p.Q.X!), Base64UrlEncoder.Encode(p.Q.Y!));
        }
        (jwk["kid"], jwk["use"], jwk["alg"]) = (k.Key.KeyId, "sig", k.Algorithm);
        return jwk;
    }

    /// <summary>Public keys as a JWKS document (RFC 7517), the signing key first; never a private member.</summary>
    public object Jwks()
    {
        var keys = _keys;
        return new
        {
            keys = keys.Info.Select(i => keys.ByKid[i.Kid]).Select(PublicJwk).ToArray(),
        };
    }
}
