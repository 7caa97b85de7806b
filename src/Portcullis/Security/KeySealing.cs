using System.Data.Common;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Options;
using Portcullis.Data;

namespace Portcullis.Security;

/// <summary>Configuration section <c>Keys</c>: the key-encryption key that seals the keys stored in the database.</summary>
internal sealed class KeysOptions
{
    public const string Section = "Keys";

    /// <summary>The key-encryption key itself, base64 of 32 bytes (from the environment or a secret store). Wins over the file.</summary>
    public string? EncryptionKey { get; set; }

    /// <summary>A file holding the key-encryption key (base64 of 32 bytes); <c>encryption.key</c> in the data directory when unset.</summary>
    public string? EncryptionKeyFile { get; set; }

    /// <summary>Earlier key-encryption keys, base64: they only unseal, and what they sealed is sealed again with the current key at start.</summary>
    public List<string> PreviousEncryptionKeys { get; set; } = [];

    /// <summary>Files holding earlier key-encryption keys.</summary>
    public List<string> PreviousEncryptionKeyFiles { get; set; } = [];
}

/// <summary>
/// Seals the private keys Portcullis keeps in its database (JWT signing keys, the Data Protection key ring) with a
/// key-encryption key (KEK) that is not in the database, so that a copy of the database cannot forge a token
/// (docs/decisions.md, "Keys at rest"). AES-256-GCM, a fresh 96-bit nonce per seal, and the row's purpose and name
/// as associated data, so a sealed value cannot be moved to another row. A sealed value reads
/// <c>sealed:v1:&lt;key id&gt;:&lt;base64 nonce|ciphertext|tag&gt;</c>; the key id names which KEK sealed it.
/// </summary>
internal sealed class KeySealing(IOptions<KeysOptions> options, ILogger<KeySealing> logger)
{
    public const string SigningKeys = "signing-key";
    public const string DataProtection = "data-protection-key";
    public const string WebhookSecrets = "webhook-secret";
    public const string DefaultFileName = "encryption.key";

    private const string Prefix = "sealed:v1:";
    private const int KeySize = 32, NonceSize = 12, TagSize = 16;

    private Kek? _current;
    private Dictionary<string, Kek> _byId = [];
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>
    /// Blocks until the start-up has loaded the KEKs. Data Protection reads its key ring from a hosted service that starts
    /// alongside the start-up steps, and its repository interface is synchronous.
    /// </summary>
    /// <returns>False when the start failed (the server is stopping).</returns>
    public bool WaitUntilReady()
    {
        if (!_ready.Task.Wait(TimeSpan.FromMinutes(2)))
            throw new InvalidOperationException("The key-encryption key was not loaded within two minutes of start.");
        return _current is not null;
    }

    private sealed record Kek(string Id, byte[] Key, string Source);

    /// <summary>The id of the KEK that seals from now on.</summary>
    public string CurrentId => (_current ?? throw new InvalidOperationException("The key-encryption key is not loaded yet.")).Id;

    public static bool IsSealed(string stored) => stored.StartsWith(Prefix, StringComparison.Ordinal);

    /// <summary>The id of the KEK a stored value was sealed with; null when it is not sealed.</summary>
    public static string? SealedWith(string stored) =>
        IsSealed(stored) && stored.IndexOf(':', Prefix.Length) is > 0 and var end ? stored[Prefix.Length..end] : null;

    public string Seal(ReadOnlySpan<byte> plaintext, string purpose, string name)
    {
        var kek = _current ?? throw new InvalidOperationException("The key-encryption key is not loaded yet.");
        var sealedBytes = new byte[NonceSize + plaintext.Length + TagSize];
        var nonce = sealedBytes.AsSpan(0, NonceSize);
        RandomNumberGenerator.Fill(nonce);
        using var aes = new AesGcm(kek.Key, TagSize);
        aes.Encrypt(nonce, plaintext, sealedBytes.AsSpan(NonceSize, plaintext.Length), sealedBytes.AsSpan(NonceSize + plaintext.Length), AssociatedData(purpose, name));
        return Prefix + kek.Id + ":" + Convert.ToBase64String(sealedBytes);
    }

    /// <summary>The plaintext of a sealed value, or null when it is not sealed, sealed by a KEK this server lacks, or altered.</summary>
    public byte[]? Unseal(string stored, string purpose, string name)
    {
        if (SealedWith(stored) is not { } id || !_byId.TryGetValue(id, out var kek))
            return null;
        byte[] sealedBytes;
        try
        {
            sealedBytes = Convert.FromBase64String(stored[(Prefix.Length + id.Length + 1)..]);
        }
        catch (FormatException)
        {
            return null;
        }
        if (sealedBytes.Length < NonceSize + TagSize)
            return null;
        var plaintext = new byte[sealedBytes.Length - NonceSize - TagSize];
        using var aes = new AesGcm(kek.Key, TagSize);
        try
        {
            aes.Decrypt(sealedBytes.AsSpan(0, NonceSize), sealedBytes.AsSpan(NonceSize, plaintext.Length), sealedBytes.AsSpan(NonceSize + plaintext.Length),
                plaintext, AssociatedData(purpose, name));
            return plaintext;
        }
        catch (AuthenticationTagMismatchException)
        {
            return null;
        }
    }

    private static byte[] AssociatedData(string purpose, string name) => Encoding.UTF8.GetBytes("portcullis:" + purpose + ":" + name);

    /// <summary>
    /// At start, before any key is read: loads the KEKs, refuses to start when the database holds keys sealed with a
    /// KEK this server does not have, creates the KEK file on a database that has never been sealed, and seals again
    /// with the current KEK what is stored in clear (a database from before sealing) or sealed with a previous KEK.
    /// </summary>
    public async Task PrepareAsync(DbConnection connection, string dataDirectory, CancellationToken cancellationToken)
    {
        var o = options.Value;
        var file = string.IsNullOrEmpty(o.EncryptionKeyFile) ? Path.Combine(dataDirectory, DefaultFileName) : Path.GetFullPath(o.EncryptionKeyFile);
        var previous = o.PreviousEncryptionKeys.Select((k, i) => Parse(k, $"Keys:PreviousEncryptionKeys:{i}"))
            .Concat(o.PreviousEncryptionKeyFiles.Select(f => Read(Path.GetFullPath(f)) ?? throw new StartupException($"The previous key-encryption key file '{f}' does not exist.")))
            .ToList();
        var current = !string.IsNullOrEmpty(o.EncryptionKey) ? Parse(o.EncryptionKey, "Keys:EncryptionKey") : Read(file);

        var rows = await StoredAsync(connection, cancellationToken);
        var sealedIds = rows.Select(r => SealedWith(r.Value)).OfType<string>().ToHashSet(StringComparer.Ordinal);
        var known = previous.Append(current).OfType<Kek>().Select(k => k.Id).ToHashSet(StringComparer.Ordinal);
        if (sealedIds.FirstOrDefault(id => !known.Contains(id)) is { } missing)
        {
            throw new StartupException(
                $"The database holds keys sealed with key-encryption key {missing}, which this server does not have " +
                (current is null ? $"(there is no '{file}')" : $"(it has {current.Id} from {current.Source})") +
                ". Give it that key: the file it was created in, through Keys:EncryptionKeyFile, or its value through " +
                "PORTCULLIS_Keys__EncryptionKey (or as a previous key while rotating). A new key would not open the stored keys. See docs/configuration.md.");
        }
        if (current is null)
        {
            current = Create(file);
            logger.LogWarning("Created the key-encryption key {Id} in {File}. It seals the signing keys stored in the database: back it up apart from " +
                "the database, and give every instance the same key (docs/configuration.md)", current.Id, file);
        }
        _byId = previous.Append(current).GroupBy(k => k.Id).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        _current = current;

        // What is in clear is sealed only while nothing is sealed yet (an upgrade from before sealing): once the
        // database is sealed, a clear key written into it is somebody's forgery and is never used.
        var toSeal = rows.Where(r => sealedIds.Count == 0 ? !IsSealed(r.Value) : SealedWith(r.Value) is { } id && id != current.Id).ToList();
        if (toSeal.Count > 0)
            await SealAgainAsync(connection, toSeal, cancellationToken);
        await SealWebhookSecretsAgainAsync(connection, current.Id, cancellationToken);
        _ready.TrySetResult();
    }

    /// <summary>The start-up is over, loaded or failed: nobody waits any longer (after a failure they are told so).</summary>
    public void EndOfStart() => _ready.TrySetResult();

    private sealed record StoredKey(string Table, string Purpose, string Name, string Value);

    private static async Task<List<StoredKey>> StoredAsync(DbConnection connection, CancellationToken cancellationToken)
    {
        var rows = new List<StoredKey>();
        await using (var cmd = Sql.Command(connection, "SELECT kid, private_key FROM signing_keys"))
        await using (var reader = await cmd.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
                rows.Add(new StoredKey("signing_keys", SigningKeys, reader.GetString(0), reader.GetString(1)));
        }
        await using (var cmd = Sql.Command(connection, "SELECT friendly_name, xml FROM data_protection_keys"))
        await using (var reader = await cmd.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
                rows.Add(new StoredKey("data_protection_keys", DataProtection, reader.GetString(0), reader.GetString(1)));
        }
        return rows;
    }

    /// <summary>
    /// People's webhook secrets (Notifications/) are sealed too: those sealed with a previous KEK are sealed again with the
    /// current one, so that the previous KEK can go. One sealed with a KEK this server lacks does not stop the start: that
    /// webhook's deliveries fail, saying so, until it is made again.
    /// </summary>
    private async Task SealWebhookSecretsAgainAsync(DbConnection connection, string currentId, CancellationToken cancellationToken)
    {
        var stale = new List<(long Id, string Value)>();
        await using (var cmd = Sql.Command(connection, "SELECT id, sealed_secret FROM webhooks"))
        await using (var reader = await cmd.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                if (SealedWith(reader.GetString(1)) is { } id && id != currentId)
                    stale.Add((reader.GetInt64(0), reader.GetString(1)));
            }
        }
        if (stale.Count == 0)
            return;
        await using var tx = await connection.BeginTransactionAsync(cancellationToken);
        foreach (var (id, value) in stale)
        {
            var name = id.ToString(CultureInfo.InvariantCulture);
            if (Unseal(value, WebhookSecrets, name) is not { } secret)
            {
                logger.LogError("The secret of webhook {Id} does not open with the key-encryption keys given: its deliveries will fail until it is made again", id);
                continue;
            }
            await using var update = Sql.Command(connection, tx, "UPDATE webhooks SET sealed_secret = @value WHERE id = @id AND sealed_secret = @old",
                ("@value", Seal(secret, WebhookSecrets, name)), ("@id", id), ("@old", value));
            await update.ExecuteNonQueryAsync(cancellationToken);
        }
        await tx.CommitAsync(cancellationToken);
    }

    private async Task SealAgainAsync(DbConnection connection, List<StoredKey> rows, CancellationToken cancellationToken)
    {
        await using var tx = await connection.BeginTransactionAsync(cancellationToken);
        var count = 0;
        foreach (var row in rows)
        {
            var plaintext = IsSealed(row.Value) ? Unseal(row.Value, row.Purpose, row.Name) : Encoding.UTF8.GetBytes(row.Value);
            if (plaintext is null)
            {
                logger.LogError("The stored {Purpose} {Name} does not open with its key-encryption key: left as it is, and not used", row.Purpose, row.Name);
                continue;
            }
            // Only if nobody changed it meanwhile (another instance starting at the same moment seals it too).
            var sql = row.Table == "signing_keys"
                ? "UPDATE signing_keys SET private_key = @value WHERE kid = @name AND private_key = @old"
                : "UPDATE data_protection_keys SET xml = @value WHERE friendly_name = @name AND xml = @old";
            await using var cmd = Sql.Command(connection, tx, sql, ("@value", Seal(plaintext, row.Purpose, row.Name)), ("@name", row.Name), ("@old", row.Value));
            count += await cmd.ExecuteNonQueryAsync(cancellationToken);
        }
        await tx.CommitAsync(cancellationToken);
        if (count > 0)
            logger.LogWarning("Sealed {Count} stored keys with the key-encryption key {Id}", count, CurrentId);
    }

    private static Kek Parse(string base64, string source)
    {
        Span<byte> key = stackalloc byte[KeySize + 1];
        if (!Convert.TryFromBase64String(base64.Trim(), key, out var written) || written != KeySize)
            throw new StartupException($"{source} is not a key-encryption key: it must be 32 random bytes in base64 (for example `openssl rand -base64 32`).");
        var bytes = key[..KeySize].ToArray();
        return new Kek(IdOf(bytes), bytes, source);
    }

    private static Kek? Read(string path)
    {
        if (!File.Exists(path))
            return null;
        try
        {
            return Parse(File.ReadAllText(path), $"the file '{path}'");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new StartupException($"Cannot read the key-encryption key file '{path}': {e.Message}.");
        }
    }

    private static Kek Create(string path)
    {
        var key = RandomNumberGenerator.GetBytes(KeySize);
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            var file = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows())
                file.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            using var writer = new StreamWriter(path, Encoding.ASCII, file);
            writer.WriteLine(Convert.ToBase64String(key));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new StartupException($"Cannot create the key-encryption key file '{path}': {e.Message}. Set Keys:EncryptionKeyFile to a writable place, or give the key through PORTCULLIS_Keys__EncryptionKey.");
        }
        return new Kek(IdOf(key), key, $"the file '{path}'");
    }

    /// <summary>Names a KEK without revealing it: 64 bits of a domain-separated SHA-256, in hex.</summary>
    private static string IdOf(byte[] key) =>
        Convert.ToHexStringLower(SHA256.HashData([.. Encoding.ASCII.GetBytes("portcullis-kek-id:"), .. key]).AsSpan(0, 8));
}
