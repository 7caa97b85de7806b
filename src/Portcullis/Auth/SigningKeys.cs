using System.Security.Cryptography;
using System.Text;
using System.Data.Common;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.Tokens;
using Portcullis.Audit;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;

namespace Portcullis.Auth;

/// <summary>
/// The ES256 keys that sign and verify JWTs. Created on first start and kept in the database so that
/// every instance signs with the same key. The newest unretired key signs; a rotation retires the
/// others, which keep verifying (and stay in the JWKS) until every token they signed has expired,
/// and are then pruned. Other instances reload when told of a rotation, or when a JWT names a
/// <c>kid</c> they do not know (at most once per <see cref="UnknownKidReloadInterval"/>). The private keys are stored
/// sealed (<see cref="KeySealing"/>); a row that does not unseal is never used.
/// </summary>
internal sealed class SigningKeys(IServiceScopeFactory scopes, TimeProvider time, AuditLog audit, KeySealing sealing, IOptions<JwtOptions> options,
    ILogger<SigningKeys> logger)
{
    public const string Algorithm = SecurityAlgorithms.EcdsaSha256;

    /// <summary>An unknown <c>kid</c> costs at most one database read per this interval, however many arrive.</summary>
    public static readonly TimeSpan UnknownKidReloadInterval = TimeSpan.FromSeconds(5);

    private volatile KeySet _keys = new(new Dictionary<string, ECDsaSecurityKey>(), null, []);
    private volatile bool _loaded;
    // Far in the past, but not so far that "now - last" overflows.
    private long _lastUnknownKidReload = long.MinValue / 2;
    private readonly SemaphoreSlim _reloadLock = new(1, 1);

    private sealed record KeySet(IReadOnlyDictionary<string, ECDsaSecurityKey> ByKid, SigningCredentials? Current, IReadOnlyList<KeyInfo> Info);

    /// <summary>A key as listed by <c>/api/v1/keys</c>: never the key material.</summary>
    internal sealed record KeyInfo(string Kid, string Alg, DateTime CreatedAt, DateTime? RetiredAt, bool Signing);

    public SigningCredentials Current => _keys.Current ?? throw new InvalidOperationException("No signing key loaded.");

    public ECDsaSecurityKey? Find(string kid) => _keys.ByKid.GetValueOrDefault(kid);

    public IEnumerable<ECDsaSecurityKey> All => _keys.ByKid.Values;

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
            await using var scope = scopes.CreateAsyncScope();
            var db = scope.ServiceProvider.GetRequiredService<PortcullisDb>();
            await db.Database.OpenConnectionAsync(cancellationToken);
            var rows = await ReadAsync(db.Database.GetDbConnection(), cancellationToken);
            if (rows.Count > 0)
                Apply(rows);
        }
        catch (Exception e) when (CredentialVerifier.IsDatabaseFailure(e))
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
    public async ValueTask<ECDsaSecurityKey?> FindOrReloadAsync(string kid, CancellationToken cancellationToken)
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
        await using var scope = scopes.CreateAsyncScope();
        var db = scope.ServiceProvider.GetRequiredService<PortcullisDb>();
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
        await using var scope = scopes.CreateAsyncScope();
        var db = scope.ServiceProvider.GetRequiredService<PortcullisDb>();
        await db.Database.OpenConnectionAsync(cancellationToken);
        var connection = db.Database.GetDbConnection();
        var pruned = await Sql.ExecuteAsync(connection, "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < @before", cancellationToken,
            ("@before", time.GetUtcNow().UtcDateTime - Retention));
        if (pruned > 0)
        {
            logger.LogInformation("Pruned {Count} retired JWT signing keys", pruned);
            Apply(await ReadAsync(connection, cancellationToken));
        }
    }

    private void Apply(List<(SigningKey Row, ECDsaSecurityKey Key)> rows)
    {
        var byKid = new Dictionary<string, ECDsaSecurityKey>(StringComparer.Ordinal);
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
        _keys = new KeySet(byKid, new SigningCredentials(currentKey, Algorithm), info);
    }

    /// <summary>The stored keys this server can unseal; any other row is left alone and never used.</summary>
    private async Task<List<(SigningKey Row, ECDsaSecurityKey Key)>> ReadAsync(DbConnection connection, CancellationToken cancellationToken)
    {
        var rows = new List<(SigningKey, ECDsaSecurityKey)>();
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
            var pkcs8 = Convert.FromBase64String(Encoding.ASCII.GetString(text));
            var ecdsa = ECDsa.Create();
            ecdsa.ImportPkcs8PrivateKey(pkcs8, out _);
            CryptographicOperations.ZeroMemory(pkcs8);
            CryptographicOperations.ZeroMemory(text);
            rows.Add((row, new ECDsaSecurityKey(ecdsa) { KeyId = row.Kid }));
        }
        return rows;
    }

    /// <summary>Inserts a new key (retiring the others and pruning expired ones when rotating) with its audit event, in one transaction.</summary>
    private async Task<string> CreateAsync(DbConnection connection, HttpContext? http, bool retireOthers, CancellationToken cancellationToken)
    {
        using var ecdsa = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var kid = Base64UrlEncoder.Encode(RandomNumberGenerator.GetBytes(12));
        var now = time.GetUtcNow().UtcDateTime;
        await using var tx = await connection.BeginTransactionAsync(cancellationToken);
        var retired = new List<string>();
        if (retireOthers)
        {
            await using (var select = Sql.Command(connection, "SELECT kid FROM signing_keys WHERE retired_at IS NULL"))
            {
                select.Transaction = tx;
                await using var reader = await select.ExecuteReaderAsync(cancellationToken);
                while (await reader.ReadAsync(cancellationToken))
                    retired.Add(reader.GetString(0));
            }
            await Execute("UPDATE signing_keys SET retired_at = @at WHERE retired_at IS NULL", ("@at", now));
            await Execute("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < @before", ("@before", now - Retention));
        }
        await Execute("INSERT INTO signing_keys (kid, algorithm, private_key, created_at) VALUES (@kid, @alg, @key, @at)",
            ("@kid", kid), ("@alg", Algorithm), ("@key", sealing.Seal(Encoding.ASCII.GetBytes(Convert.ToBase64String(ecdsa.ExportPkcs8PrivateKey())), KeySealing.SigningKeys, kid)), ("@at", now));
        var e = retireOthers
            ? audit.Create(http, AuditEvents.SigningKeyRotated, details: new { kid, retired })
            : audit.Create(http, AuditEvents.SigningKeyCreated, details: new { kid });
        await Execute("INSERT INTO audit_events (occurred_at, event, actor, actor_id, token_id, client_ip, details) VALUES (@at, @event, @actor, @actor_id, @token_id, @ip, @details)",
            ("@at", e.OccurredAt), ("@event", e.Event), ("@actor", e.Actor), ("@actor_id", e.ActorId), ("@token_id", e.TokenId), ("@ip", e.ClientIp), ("@details", e.Details));
        await tx.CommitAsync(cancellationToken);
        logger.LogInformation(retireOthers ? "Rotated the JWT signing key: {Kid} signs from now on" : "Created JWT signing key {Kid}", kid);
        return kid;

        async Task Execute(string sql, params (string, object?)[] parameters)
        {
            await using var cmd = Sql.Command(connection, sql, parameters);
            cmd.Transaction = tx;
            await cmd.ExecuteNonQueryAsync(cancellationToken);
        }
    }

    /// <summary>Public keys as a JWKS document (RFC 7517), the signing key first; never a private member.</summary>
    public object Jwks()
    {
        var keys = _keys;
        return new
        {
            keys = keys.Info.Select(i => keys.ByKid[i.Kid]).Select(k =>
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
}
