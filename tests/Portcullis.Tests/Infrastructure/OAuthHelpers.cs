using System.Buffers.Text;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Portcullis.Tests.Infrastructure;

/// <summary>OAuth clients, client-credentials tokens, and JWTs taken apart and put back together.</summary>
public static class OAuthHelpers
{
    public sealed record ClientCredentials(string ClientId, string ClientSecret);

    /// <summary>Creates an OAuth client with the given credential and registers its secret as one the logs must not contain.</summary>
    public static async Task<ClientCredentials> CreateClientAsync(this PortcullisServer server, string credential, string[] scopes, string? name = null)
    {
        using var client = server.Client(credential);
        var response = await client.PostAsJsonAsync("/api/v1/clients", new { name = name ?? "client-" + Guid.NewGuid().ToString("N")[..8], scopes });
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, $"client creation failed: {(int)response.StatusCode} {body}");
        var json = JsonDocument.Parse(body).RootElement;
        var secret = json.GetProperty("client_secret").GetString()!;
        PortcullisServer.Secrets.Add(secret);
        return new ClientCredentials(json.GetProperty("client_id").GetString()!, secret);
    }

    /// <summary>HTTP Basic as RFC 6749 §2.3.1 says: the id and secret form-urlencoded, then base64.</summary>
    public static AuthenticationHeaderValue Basic(string clientId, string secret) =>
        BasicRaw(Uri.EscapeDataString(clientId) + ":" + Uri.EscapeDataString(secret));

    public static AuthenticationHeaderValue BasicRaw(string userPass) => new("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes(userPass)));

    public static async Task<HttpResponseMessage> ClientCredentialsAsync(this PortcullisServer server, ClientCredentials c, string? scope = null, string path = "/auth/token")
    {
        using var client = server.Client();
        using var request = new HttpRequestMessage(HttpMethod.Post, path)
        {
            Content = new FormUrlEncodedContent(scope is null
                ? [new("grant_type", "client_credentials")]
                : [new("grant_type", "client_credentials"), new("scope", scope)]),
        };
        request.Headers.Authorization = Basic(c.ClientId, c.ClientSecret);
        return await client.SendAsync(request);
    }

    /// <summary>A client-credentials access token (registered as a secret).</summary>
    public static async Task<string> ClientTokenAsync(this PortcullisServer server, ClientCredentials c, string? scope = null)
    {
        using var response = await server.ClientCredentialsAsync(c, scope);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"client_credentials failed: {(int)response.StatusCode} {body}");
        var token = JsonDocument.Parse(body).RootElement.GetProperty("access_token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        return token;
    }

    public static JsonObject Header(string jwt) => (JsonObject)JsonNode.Parse(Base64Url.DecodeFromChars(jwt.Split('.')[0]))!;

    public static JsonObject Payload(string jwt) => (JsonObject)JsonNode.Parse(Base64Url.DecodeFromChars(jwt.Split('.')[1]))!;

    public static string Encode(JsonNode node) => Base64Url.EncodeToString(Encoding.UTF8.GetBytes(node.ToJsonString()));

    /// <summary>Header and payload as given, with a signature made by <paramref name="sign"/> over <c>header.payload</c>.</summary>
    public static string Craft(JsonObject header, JsonObject payload, Func<byte[], byte[]> sign)
    {
        var signingInput = Encode(header) + "." + Encode(payload);
        return signingInput + "." + Base64Url.EncodeToString(sign(Encoding.ASCII.GetBytes(signingInput)));
    }

    public static Func<byte[], byte[]> Es256(ECDsa key) => data => key.SignData(data, HashAlgorithmName.SHA256);

    public static long Now => DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    public sealed record StoredKey(string Kid, ECDsa Key);

    /// <summary>The signing key the server uses now, read from its database, to craft tokens it would accept but for one detail.</summary>
    public static async Task<StoredKey> CurrentSigningKeyAsync(this PortcullisServer server)
    {
        const string sql = "SELECT kid, private_key FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC, kid LIMIT 1";
        string kid, pkcs8;
        if (server.Provider == Provider.Postgres)
        {
            await using var connection = new NpgsqlConnection(server.ConnectionString);
            await connection.OpenAsync();
            await using var cmd = new NpgsqlCommand(sql, connection);
            await using var reader = await cmd.ExecuteReaderAsync();
            Assert.True(await reader.ReadAsync());
            (kid, pkcs8) = (reader.GetString(0), reader.GetString(1));
        }
        else
        {
            await using var connection = new SqliteConnection($"Data Source={SqlitePath(server)};Mode=ReadOnly;Pooling=False");
            await connection.OpenAsync();
            await using var cmd = connection.CreateCommand();
            cmd.CommandText = sql;
            await using var reader = await cmd.ExecuteReaderAsync();
            Assert.True(await reader.ReadAsync());
            (kid, pkcs8) = (reader.GetString(0), reader.GetString(1));
        }
        var key = ECDsa.Create();
        key.ImportPkcs8PrivateKey(Convert.FromBase64String(Encoding.ASCII.GetString(Unseal(server.EncryptionKey(), pkcs8, "signing-key", kid))), out _);
        return new StoredKey(kid, key);
    }

    /// <summary>
    /// A stored key's text, unsealed as docs/decisions.md ("Keys at rest") describes: <c>sealed:v1:id:</c> and base64 of
    /// nonce, ciphertext and tag, AES-256-GCM under the key-encryption key with <c>portcullis:purpose:name</c> as associated data.
    /// </summary>
    public static byte[] Unseal(byte[] kek, string stored, string purpose, string name)
    {
        var parts = stored.Split(':');
        Assert.True(parts.Length == 4 && parts[0] == "sealed" && parts[1] == "v1", $"not a sealed value: {stored[..Math.Min(12, stored.Length)]}…");
        var bytes = Convert.FromBase64String(parts[3]);
        var plaintext = new byte[bytes.Length - 28];
        using var aes = new AesGcm(kek, 16);
        aes.Decrypt(bytes.AsSpan(0, 12), bytes.AsSpan(12, plaintext.Length), bytes.AsSpan(12 + plaintext.Length), plaintext, Encoding.UTF8.GetBytes($"portcullis:{purpose}:{name}"));
        return plaintext;
    }

    /// <summary>Seals as the server does (with a key id computed as docs/decisions.md describes).</summary>
    public static string Seal(byte[] kek, byte[] plaintext, string purpose, string name)
    {
        var id = Convert.ToHexStringLower(SHA256.HashData([.. Encoding.ASCII.GetBytes("portcullis-kek-id:"), .. kek]).AsSpan(0, 8));
        var bytes = new byte[12 + plaintext.Length + 16];
        RandomNumberGenerator.Fill(bytes.AsSpan(0, 12));
        using var aes = new AesGcm(kek, 16);
        aes.Encrypt(bytes.AsSpan(0, 12), plaintext, bytes.AsSpan(12, plaintext.Length), bytes.AsSpan(12 + plaintext.Length), Encoding.UTF8.GetBytes($"portcullis:{purpose}:{name}"));
        return $"sealed:v1:{id}:{Convert.ToBase64String(bytes)}";
    }

    /// <summary>One value read from the server's database from outside.</summary>
    public static Task<object?> ScalarAsync(this PortcullisServer server, string sql, params (string Name, object Value)[] parameters) =>
        WithCommandAsync(server, sql, parameters, readOnly: true, command => command.ExecuteScalarAsync());

    /// <summary>Runs SQL against the server's database from outside, as another instance (or an operator) would.</summary>
    public static Task ExecuteSqlAsync(this PortcullisServer server, string sql, params (string Name, object Value)[] parameters) =>
        WithCommandAsync(server, sql, parameters, readOnly: false, async command => (object?)await command.ExecuteNonQueryAsync());

    private static async Task<object?> WithCommandAsync(PortcullisServer server, string sql, (string Name, object Value)[] parameters, bool readOnly,
        Func<System.Data.Common.DbCommand, Task<object?>> run)
    {
        await using System.Data.Common.DbConnection connection = server.Provider == Provider.Postgres
            ? new NpgsqlConnection(server.ConnectionString)
            : new SqliteConnection($"Data Source={SqlitePath(server)};{(readOnly ? "Mode=ReadOnly;" : "")}Pooling=False;Default Timeout=30");
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        foreach (var (name, value) in parameters)
        {
            var parameter = command.CreateParameter();
            // Npgsql matches "@name" in the text to a parameter named "name"; SQLite wants the "@".
            parameter.ParameterName = server.Provider == Provider.Postgres ? name : "@" + name;
            parameter.Value = value;
            command.Parameters.Add(parameter);
        }
        return await run(command);
    }

    private static string SqlitePath(PortcullisServer server) => Path.Combine(server.DataDir, "data", "portcullis.db");

    /// <summary>Posts a form to an /auth endpoint, optionally with an Authorization header.</summary>
    public static async Task<HttpResponseMessage> PostFormAsync(this PortcullisServer server, string path, IEnumerable<KeyValuePair<string, string>> form,
        AuthenticationHeaderValue? authorization = null)
    {
        using var client = server.Client();
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new FormUrlEncodedContent(form) };
        request.Headers.Authorization = authorization;
        return await client.SendAsync(request);
    }
}
