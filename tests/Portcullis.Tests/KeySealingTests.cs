using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Data.Sqlite;
using Portcullis.Tests.Infrastructure;
using static Portcullis.Tests.Infrastructure.OAuthHelpers;

namespace Portcullis.Tests;

/// <summary>
/// docs/decisions.md, "Keys at rest": the signing keys and the Data Protection key ring are sealed with a key-encryption
/// key kept outside the database, so the database alone (a copy, or write access to it) cannot forge a token.
/// </summary>
public sealed class KeySealingTests
{
    private static string KeyFile(PortcullisServer server) => Path.Combine(server.DataDir, "data", "encryption.key");

    private static async Task<List<(string Name, string Value)>> RowsAsync(PortcullisServer server, string sql)
    {
        await using var connection = new SqliteConnection($"Data Source={Path.Combine(server.DataDir, "data", "portcullis.db")};Mode=ReadOnly;Pooling=False");
        await connection.OpenAsync();
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = sql;
        await using var reader = await cmd.ExecuteReaderAsync();
        var rows = new List<(string, string)>();
        while (await reader.ReadAsync())
            rows.Add((reader.GetString(0), reader.GetString(1)));
        return rows;
    }

    private static Task<List<(string Name, string Value)>> SigningKeysAsync(PortcullisServer server) => RowsAsync(server, "SELECT kid, private_key FROM signing_keys");

    private static Task<List<(string Name, string Value)>> DataProtectionKeysAsync(PortcullisServer server) => RowsAsync(server, "SELECT friendly_name, xml FROM data_protection_keys");

    private static string KekId(byte[] kek) => Convert.ToHexStringLower(SHA256.HashData([.. Encoding.ASCII.GetBytes("portcullis-kek-id:"), .. kek]).AsSpan(0, 8));

    /// <summary>The kid the server signs with now. After a restart the same kid means the sealed key still opened (a JWT from
    /// before would not do as proof: the test server's port, and so the issuer, changes at each start).</summary>
    private static async Task<string> SigningKidAsync(PortcullisServer server) => (string)Header(await server.LoginAsync())["kid"]!;

    /// <summary>The whole refusal when it says something else: a loaded machine once refused for another reason.</summary>
    private static void AssertSays(string refusal, string expected) =>
        Assert.True(refusal.Contains(expected, StringComparison.Ordinal), $"Expected the refusal to say \"{expected}\"; it was:\n{refusal}");

    private static async Task<string> StartFailsAsync(PortcullisServer server, params string[] args)
    {
        var failure = await Assert.ThrowsAsync<InvalidOperationException>(() => server.StartAsync(args));
        return failure.Message;
    }

    [Fact]
    public async Task StoredKeysAreSealedAndTheKeyFileIsTheOwnersAlone()
    {
        await using var server = new SqliteServer();
        await server.InitializeAsync();
        // A form is rendered, so the Data Protection key ring exists.
        Assert.Equal(HttpStatusCode.OK, (await server.Client().GetAsync("/login")).StatusCode);

        Assert.True(OperatingSystem.IsLinux(), "these tests run on Linux");
        if (OperatingSystem.IsLinux())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(KeyFile(server)));
        var kek = server.EncryptionKey();
        var signing = await SigningKeysAsync(server);
        var ring = await DataProtectionKeysAsync(server);
        Assert.NotEmpty(signing);
        Assert.NotEmpty(ring);
        foreach (var (kid, value) in signing)
        {
            Assert.StartsWith($"sealed:v1:{KekId(kek)}:", value);
            // The value is no key without the KEK, and the KEK opens it only as this row's.
            Assert.ThrowsAny<Exception>(() => ECDsa.Create().ImportPkcs8PrivateKey(Convert.FromBase64String(value.Split(':')[3]), out _));
            Assert.ThrowsAny<CryptographicException>(() => Unseal(kek, value, "signing-key", kid + "x"));
            using var key = ECDsa.Create();
            key.ImportPkcs8PrivateKey(Convert.FromBase64String(Encoding.ASCII.GetString(Unseal(kek, value, "signing-key", kid))), out _);
        }
        foreach (var (name, xml) in ring)
        {
            Assert.StartsWith("sealed:v1:", xml);
            Assert.Contains("<masterKey", Encoding.UTF8.GetString(Unseal(kek, xml, "data-protection-key", name)));
        }
        await server.StopAsync();
        foreach (var file in Directory.GetFiles(Path.Combine(server.DataDir, "data"), "portcullis.db*"))
            Assert.DoesNotContain("masterKey", Encoding.Latin1.GetString(await File.ReadAllBytesAsync(file)));
        await server.StartAsync();
    }

    [Fact]
    public async Task AKeyWrittenIntoTheDatabaseInClearSignsNothingThatIsAccepted()
    {
        await using var server = new SqliteServer();
        await server.InitializeAsync();
        var genuine = await server.LoginAsync();
        Assert.Equal(HttpStatusCode.OK, (await server.Client(genuine).GetAsync("/api/v1/me")).StatusCode);

        // Whoever can write the database adds a key of their own, newest and unretired, as a rotation would.
        using var forged = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var kid = "forged-" + Guid.NewGuid().ToString("N")[..8];
        await server.ExecuteSqlAsync("INSERT INTO signing_keys (kid, algorithm, private_key, created_at) VALUES (@kid, 'ES256', @key, @at)",
            ("kid", kid), ("key", Convert.ToBase64String(forged.ExportPkcs8PrivateKey())), ("at", DateTime.UtcNow.AddMinutes(1)));
        // ... or one sealed with a key-encryption key of their own.
        using var forged2 = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var kid2 = "forged2-" + Guid.NewGuid().ToString("N")[..8];
        await server.ExecuteSqlAsync("INSERT INTO signing_keys (kid, algorithm, private_key, created_at) VALUES (@kid, 'ES256', @key, @at)",
            ("kid", kid2), ("key", Seal(RandomNumberGenerator.GetBytes(32), Encoding.ASCII.GetBytes(Convert.ToBase64String(forged2.ExportPkcs8PrivateKey())), "signing-key", kid2)),
            ("at", DateTime.UtcNow.AddMinutes(1)));
        using (var admin = server.Client(await server.AdminTokenAsync()))
            Assert.Equal(HttpStatusCode.OK, (await admin.PostAsync("/api/v1/keys/rotate", null)).StatusCode); // every instance re-reads the keys

        foreach (var (k, key) in new[] { (kid, forged), (kid2, forged2) })
        {
            var header = Header(genuine);
            header["kid"] = k;
            var token = Craft(header, Payload(genuine), Es256(key));
            // An unknown kid makes the server re-read the keys (at most every 5 s): wait that out, then it must still refuse.
            await Task.Delay(TimeSpan.FromSeconds(5.5));
            Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(token).GetAsync("/api/v1/me")).StatusCode);
        }
        var jwks = await server.Client().GetStringAsync("/.well-known/jwks.json");
        Assert.DoesNotContain(kid, jwks);
        Assert.DoesNotContain(kid2, jwks);
        // And the server still signs with a key of its own.
        Assert.DoesNotContain("forged", (string?)Header(await server.LoginAsync())["kid"]);
        Assert.Contains("not sealed with a key-encryption key of this server", server.Output);
    }

    [Fact]
    public async Task WithoutItsKeyEncryptionKeyTheServerRefusesToStartAndWithItEverythingStillWorks()
    {
        await using var server = new SqliteServer();
        await server.InitializeAsync();
        var kid = await SigningKidAsync(server);
        var id = KekId(server.EncryptionKey());
        await server.StopAsync();

        var aside = KeyFile(server) + ".aside";
        File.Move(KeyFile(server), aside);
        var refused = await StartFailsAsync(server);
        AssertSays(refused, $"sealed with key-encryption key {id}");
        AssertSays(refused, "Keys:EncryptionKeyFile");
        Assert.DoesNotContain("   at ", refused); // a message, not a stack trace
        Assert.False(File.Exists(KeyFile(server)), "a new key was made beside keys it cannot open");

        // Another key is not the key.
        var wrong = Path.Combine(server.DataDir, "wrong.key");
        await File.WriteAllTextAsync(wrong, Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)));
        AssertSays(await StartFailsAsync(server, "--Keys:EncryptionKeyFile", wrong), $"sealed with key-encryption key {id}");

        // From the environment's value (here the command line's) or from its file, it starts, and what it signed still holds.
        await server.StartAsync("--Keys:EncryptionKey", (await File.ReadAllTextAsync(aside)).Trim());
        Assert.Equal(kid, await SigningKidAsync(server));
        await server.StopAsync();
        await server.StartAsync("--Keys:EncryptionKeyFile", aside);
        Assert.Equal(kid, await SigningKidAsync(server));
    }

    [Fact]
    public async Task TheKeyEncryptionKeyIsRotatedWithThePreviousOneOnlyOpening()
    {
        await using var server = new SqliteServer();
        await server.InitializeAsync();
        var kid = await SigningKidAsync(server);
        Assert.Equal(HttpStatusCode.OK, (await server.Client().GetAsync("/login")).StatusCode);
        // A person's webhook: its signing secret is sealed too, and must survive the rotation.
        using (var webhook = await server.Client(await server.AdminTokenAsync()).PostAsJsonAsync("/api/v1/webhooks",
            new { url = "https://hooks.invalid/portcullis", events = new[] { "token.revoked" } }))
        {
            Assert.Equal(HttpStatusCode.Created, webhook.StatusCode);
            PortcullisServer.Secrets.Add((await webhook.JsonAsync()).GetProperty("secret").GetString()!);
        }
        var old = server.EncryptionKey();
        await server.StopAsync();

        var next = RandomNumberGenerator.GetBytes(32);
        var nextFile = Path.Combine(server.DataDir, "next.key");
        await File.WriteAllTextAsync(nextFile, Convert.ToBase64String(next));
        await server.StartAsync("--Keys:EncryptionKeyFile", nextFile, "--Keys:PreviousEncryptionKeyFiles:0", KeyFile(server));
        Assert.Equal(kid, await SigningKidAsync(server));
        Assert.Contains("Sealed", server.Output);
        await server.StopAsync();
        // Everything is sealed with the new key now ...
        Assert.All(await SigningKeysAsync(server), row => Assert.StartsWith($"sealed:v1:{KekId(next)}:", row.Value));
        Assert.All(await DataProtectionKeysAsync(server), row => Assert.StartsWith($"sealed:v1:{KekId(next)}:", row.Value));
        Assert.All(await RowsAsync(server, "SELECT CAST(id AS TEXT), sealed_secret FROM webhooks"), row => Assert.StartsWith($"sealed:v1:{KekId(next)}:", row.Value));
        // ... so the old one can go, and alone it opens nothing.
        await server.StartAsync("--Keys:EncryptionKeyFile", nextFile);
        Assert.Equal(kid, await SigningKidAsync(server));
        await server.StopAsync();
        var refusal = await StartFailsAsync(server);
        Assert.True(refusal.Contains($"sealed with key-encryption key {KekId(next)}", StringComparison.Ordinal), refusal); // the whole log when it fails
        Assert.Equal(old, server.EncryptionKey()); // the default file, still the old key
    }

    [Fact]
    public async Task KeysStoredInClearByAnEarlierVersionAreSealedAtTheFirstStart()
    {
        await using var server = new SqliteServer();
        await server.InitializeAsync();
        var kid = await SigningKidAsync(server);
        Assert.Equal(HttpStatusCode.OK, (await server.Client().GetAsync("/login")).StatusCode);
        var kek = server.EncryptionKey();
        await server.StopAsync();
        // As an earlier version left them: in clear, and no key file.
        foreach (var (k, value) in await SigningKeysAsync(server))
            await server.ExecuteSqlAsync("UPDATE signing_keys SET private_key = @v WHERE kid = @k", ("v", Encoding.ASCII.GetString(Unseal(kek, value, "signing-key", k))), ("k", k));
        foreach (var (name, value) in await DataProtectionKeysAsync(server))
            await server.ExecuteSqlAsync("UPDATE data_protection_keys SET xml = @v WHERE friendly_name = @n", ("v", Encoding.UTF8.GetString(Unseal(kek, value, "data-protection-key", name))), ("n", name));
        File.Delete(KeyFile(server));

        await server.StartAsync();
        Assert.Equal(kid, await SigningKidAsync(server));
        var fresh = server.EncryptionKey();
        Assert.NotEqual(kek, fresh);
        await server.StopAsync();
        Assert.All(await SigningKeysAsync(server), row => Assert.StartsWith($"sealed:v1:{KekId(fresh)}:", row.Value));
        Assert.All(await DataProtectionKeysAsync(server), row => Assert.StartsWith($"sealed:v1:{KekId(fresh)}:", row.Value));
        await server.StartAsync();
    }
}
