using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Npgsql;

namespace Portcullis.Tests.Infrastructure;

public enum Provider
{
    Sqlite,
    Postgres,
}

/// <summary>
/// A real <c>portcullis serve</c> process on a free loopback port, with its own data directory (and,
/// for PostgreSQL, its own database). Its output is kept; on dispose the output is searched for any
/// secret the tests saw, so a leak into the logs fails the run.
/// </summary>
public class PortcullisServer : IAsyncLifetime, IAsyncDisposable
{
    public const string AdminPassword = "admin-password-for-tests-1";
    private static readonly Regex TokenPattern = new(@"\bpc[psc]_[0-9A-Za-z]{36}\b");

    private readonly Provider _provider;
    private readonly Dictionary<string, string> _settings;
    private Process? _process;
    private readonly StringBuilder _output = new();
    private readonly object _outputLock = new();
    private string? _database;

    public PortcullisServer() : this(Provider.Sqlite) { }

    protected PortcullisServer(Provider provider, Dictionary<string, string>? settings = null)
    {
        _provider = provider;
        _settings = settings ?? [];
        DataDir = Directory.CreateTempSubdirectory("portcullis-test-").FullName;
    }

    /// <summary>
    /// A second instance, started, on this PostgreSQL server's database and with its public URL, as behind a load balancer
    /// (a JWT or a code from one is valid at the other); <paramref name="settings"/> are added to those.
    /// </summary>
    public async Task<PortcullisServer> StartSecondInstanceAsync(Dictionary<string, string>? settings = null)
    {
        var all = new Dictionary<string, string>
        {
            ["Database:Provider"] = "postgres", ["Database:ConnectionString"] = ConnectionString!, ["PublicUrl"] = BaseAddress.ToString().TrimEnd('/'),
        };
        foreach (var (key, value) in settings ?? [])
            all[key] = value;
        var second = With(Provider.Postgres, all);
        await second.InitializeAsync();
        return second;
    }

    /// <summary>A server on an existing database or data directory (a second instance, an upgrade).</summary>
    public static PortcullisServer With(Provider provider, Dictionary<string, string> settings) => new(provider, settings, existing: true);

    private readonly bool _existing;

    private PortcullisServer(Provider provider, Dictionary<string, string> settings, bool existing) : this(provider, settings)
    {
        _existing = existing;
    }

    public Provider Provider => _provider;

    /// <summary>The key-encryption key of every PostgreSQL server of this test run (SQLite ones make their own file).</summary>
    public static readonly string SharedEncryptionKey = Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));

    /// <summary>Environment variables given to the server's process as they are (not as <c>PORTCULLIS_</c> settings), e.g. <c>OTEL_*</c>.</summary>
    public Dictionary<string, string> ExtraEnvironment { get; } = [];

    /// <summary>A setting given to this server, if any.</summary>
    public string? Setting(string key) => _settings.GetValueOrDefault(key);

    /// <summary>The key-encryption key this server seals its stored keys with.</summary>
    public byte[] EncryptionKey() => Convert.FromBase64String(
        _provider == Provider.Postgres && Setting("Keys:EncryptionKeyFile") is null ? SharedEncryptionKey
        : File.ReadAllText(Setting("Keys:EncryptionKeyFile") ?? Path.Combine(Setting("DataDir") ?? Path.Combine(DataDir, "data"), "encryption.key")).Trim());

    /// <summary>The server process's id (to read its memory from /proc).</summary>
    public int ProcessId => _process?.Id ?? throw new InvalidOperationException("The server is not running.");
    public string DataDir { get; }
    public Uri BaseAddress { get; private set; } = null!;
    public string? ConnectionString { get; private set; }

    /// <summary>Secrets handed out during the tests; none may appear in the server's output.</summary>
    public static readonly System.Collections.Concurrent.ConcurrentBag<string> Secrets = [AdminPassword];

    public string Output
    {
        get { lock (_outputLock) return _output.ToString(); }
    }

    public async Task InitializeAsync()
    {
        if (_provider == Provider.Postgres && !_existing)
        {
            ConnectionString = await CreatePostgresDatabaseAsync("pc_test_");
            _database = new NpgsqlConnectionStringBuilder(ConnectionString).Database;
            _settings["Database:Provider"] = "postgres";
            _settings["Database:ConnectionString"] = ConnectionString;
        }
        await StartAsync();
    }

    /// <summary>A new, empty database on the tests' PostgreSQL server, named <paramref name="prefix"/> and a random part: its connection string.</summary>
    public static async Task<string> CreatePostgresDatabaseAsync(string prefix)
    {
        var admin = PostgresConnectionString();
        var database = prefix + Guid.NewGuid().ToString("N")[..12];
        await using (var connection = new NpgsqlConnection(admin))
        {
            await connection.OpenAsync();
            await using var cmd = new NpgsqlCommand($"CREATE DATABASE {database}", connection);
            await cmd.ExecuteNonQueryAsync();
        }
        return new NpgsqlConnectionStringBuilder(admin) { Database = database }.ConnectionString;
    }

    public static string PostgresConnectionString() =>
        Environment.GetEnvironmentVariable("PORTCULLIS_TEST_POSTGRES")
        ?? throw new InvalidOperationException(
            "PORTCULLIS_TEST_POSTGRES is not set: the PostgreSQL tests need a server. Run ./test.sh, which starts a throwaway PostgreSQL.");

    /// <summary>How the program is started: the tests' build of <c>portcullis.dll</c> through <c>dotnet</c>, unless a subclass runs another.</summary>
    protected virtual ProcessStartInfo Program()
    {
        var psi = new ProcessStartInfo("dotnet");
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "portcullis.dll"));
        return psi;
    }

    /// <summary>
    /// A server-side command (<c>portcullis admin ...</c>) as the operator runs it on this server's machine: the same data
    /// directory and settings as <c>serve</c>, <paramref name="stdin"/> as its input.
    /// </summary>
    public async Task<(int ExitCode, string Out, string Err)> RunCommandAsync(string stdin, params string[] args)
    {
        var psi = Program();
        (psi.RedirectStandardOutput, psi.RedirectStandardError, psi.RedirectStandardInput, psi.WorkingDirectory) = (true, true, true, DataDir);
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        psi.ArgumentList.Add("--data-dir");
        psi.ArgumentList.Add(_settings.GetValueOrDefault("DataDir") ?? Path.Combine(DataDir, "data"));
        foreach (var (key, value) in _settings.Where(s => s.Key != "DataDir"))
            psi.Environment["PORTCULLIS_" + key.Replace(":", "__")] = value;
        using var process = Process.Start(psi)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.StandardInput.WriteAsync(stdin);
        process.StandardInput.Close();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await output, await error);
    }

    public async Task StartAsync(params string[] extraArgs)
    {
        var port = FreePort();
        BaseAddress = new Uri($"http://127.0.0.1:{port}");
        var psi = Program();
        (psi.RedirectStandardOutput, psi.RedirectStandardError, psi.WorkingDirectory) = (true, true, DataDir);
        psi.ArgumentList.Add("serve");
        psi.ArgumentList.Add("--urls");
        psi.ArgumentList.Add(BaseAddress.ToString().TrimEnd('/'));
        psi.ArgumentList.Add("--data-dir");
        psi.ArgumentList.Add(_settings.GetValueOrDefault("DataDir") ?? Path.Combine(DataDir, "data"));
        foreach (var a in extraArgs)
            psi.ArgumentList.Add(a);
        psi.Environment["PORTCULLIS_ADMIN_PASSWORD"] = AdminPassword;
        psi.Environment["PORTCULLIS_Tokens__UsageFlushInterval"] = "00:00:00.2";
        // Instances on one PostgreSQL database share their key-encryption key, as docs/configuration.md asks.
        if (_provider == Provider.Postgres && !_settings.ContainsKey("Keys:EncryptionKeyFile"))
            psi.Environment["PORTCULLIS_Keys__EncryptionKey"] = SharedEncryptionKey;
        foreach (var (key, value) in _settings.Where(s => s.Key != "DataDir"))
            psi.Environment["PORTCULLIS_" + key.Replace(":", "__")] = value;
        foreach (var (name, value) in ExtraEnvironment)
            psi.Environment[name] = value;

        var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        process.OutputDataReceived += (_, e) => Append(e.Data);
        process.ErrorDataReceived += (_, e) => Append(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _process = process;

        using var client = new HttpClient { BaseAddress = BaseAddress, Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < deadline)
        {
            if (process.HasExited)
            {
                // The exit can be seen before the last lines of its output arrive: wait for both streams' end, so the
                // message says why (the refusal is the last thing the server writes).
                await process.WaitForExitAsync();
                throw new InvalidOperationException($"portcullis serve exited with {process.ExitCode}:\n{Output}");
            }
            try
            {
                if ((await client.GetAsync("/readyz")).IsSuccessStatusCode)
                    return;
            }
            catch (HttpRequestException)
            {
            }
            catch (TaskCanceledException)
            {
            }
            await Task.Delay(50);
        }
        throw new TimeoutException($"portcullis serve did not become ready:\n{Output}");
    }

    /// <summary>Waits for the server's process to end by itself (after a signal), at most <paramref name="timeout"/>; its exit code.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        var process = _process ?? throw new InvalidOperationException("The server is not running.");
        using var deadline = new CancellationTokenSource(timeout);
        await process.WaitForExitAsync(deadline.Token);
        return process.ExitCode;
    }

    public async Task StopAsync()
    {
        if (_process is { HasExited: false } p)
        {
            p.Kill(entireProcessTree: true);
            await p.WaitForExitAsync();
        }
    }

    private void Append(string? line)
    {
        if (line is null)
            return;
        lock (_outputLock)
            _output.AppendLine(line);
    }

    public HttpClient Client(string? token = null)
    {
        var client = new HttpClient { BaseAddress = BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        if (token is not null)
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return client;
    }

    /// <summary>Logs in through the password grant and returns the access token.</summary>
    public async Task<string> LoginAsync(string username = "admin", string password = AdminPassword)
    {
        using var client = Client();
        var response = await client.PostAsJsonAsync("/auth/token", new { username, password });
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"login as {username} failed: {(int)response.StatusCode} {body}");
        var token = JsonDocument.Parse(body).RootElement.GetProperty("access_token").GetString()!;
        Secrets.Add(token);
        return token;
    }

    private string? _adminToken;

    /// <summary>An API token of the admin, created once per server.</summary>
    public async Task<string> AdminTokenAsync()
    {
        if (_adminToken is not null)
            return _adminToken;
        var jwt = await LoginAsync();
        _adminToken = await CreateTokenAsync(jwt, new { name = "admin-tests", scopes = new[] { "api", "services", "admin" } });
        return _adminToken;
    }

    public async Task<string> CreateTokenAsync(string credential, object request)
    {
        using var client = Client(credential);
        var response = await client.PostAsJsonAsync("/api/v1/tokens", request);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, $"token creation failed: {(int)response.StatusCode} {body}");
        var token = JsonDocument.Parse(body).RootElement.GetProperty("token").GetString()!;
        Secrets.Add(token);
        return token;
    }

    /// <summary>Runs <c>portcullis serve</c> on a fresh data directory with a setting that must be refused: its exit code and standard error.</summary>
    public static async Task<(int ExitCode, string Error)> RefusedStartAsync(string setting)
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var psi = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "portcullis.dll"), "serve", "--data-dir", dir, setting })
            psi.ArgumentList.Add(a);
        using var process = System.Diagnostics.Process.Start(psi)!;
        var error = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Directory.Delete(dir, recursive: true);
        return (process.ExitCode, error);
    }

    /// <summary>Creates a user and returns an API token of theirs with the default scopes.</summary>
    public async Task<(string Username, string Password, string Token)> CreateUserAsync(bool admin = false)
    {
        var username = "user-" + Guid.NewGuid().ToString("N")[..10];
        var password = "pw-" + Guid.NewGuid().ToString("N");
        Secrets.Add(password);
        using var client = Client(await AdminTokenAsync());
        var response = await client.PostAsJsonAsync("/api/v1/users", new { username, password, admin });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var jwt = await LoginAsync(username, password);
        var token = await CreateTokenAsync(jwt, new { name = "default" });
        return (username, password, token);
    }

    async ValueTask IAsyncDisposable.DisposeAsync() => await DisposeAsync();

    private bool _disposed;

    public async Task DisposeAsync()
    {
        if (_disposed)
            return;
        _disposed = true;
        await StopAsync();
        var output = Output;
        // What the server stored, as text: no secret may be in the database either .
        var stored = await ReadDatabaseAsTextAsync();
        if (_database is not null)
        {
            try
            {
                await using var connection = new NpgsqlConnection(PostgresConnectionString());
                await connection.OpenAsync();
                await using var cmd = new NpgsqlCommand($"DROP DATABASE IF EXISTS {_database} WITH (FORCE)", connection);
                await cmd.ExecuteNonQueryAsync();
            }
            catch (NpgsqlException)
            {
            }
        }
        var logDir = Path.Combine(AppContext.BaseDirectory, "server-logs");
        Directory.CreateDirectory(logDir);
        await File.WriteAllTextAsync(Path.Combine(logDir, $"{GetType().Name}-{Guid.NewGuid():N}.log"), output);
        try
        {
            Directory.Delete(DataDir, recursive: true);
        }
        catch (IOException)
        {
        }

        AssertNoSecrets("server log", output);
        AssertNoSecrets("database", stored);
    }

    private static readonly Regex JwtPattern = new(@"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}");

    /// <summary>
    /// Fails if <paramref name="text"/> holds anything in the token format, any JWT or token a test
    /// handled, or any password a test used. Tokens and JWTs are found by pattern and looked up, so the
    /// cost does not grow with the thousands of secrets a run hands out.
    /// </summary>
    private static void AssertNoSecrets(string where, string text)
    {
        var leaked = TokenPattern.Match(text);
        if (leaked.Success)
            Assert.Fail($"The {where} contains a token: {leaked.Value[..8]}…");
        var secrets = Secrets.ToHashSet(StringComparer.Ordinal);
        foreach (Match jwt in JwtPattern.Matches(text))
            Assert.False(secrets.Contains(jwt.Value), $"The {where} contains a JWT the tests were given: {jwt.Value[..12]}…");
        foreach (var secret in secrets)
        {
            if (secret.StartsWith("eyJ", StringComparison.Ordinal) || TokenPattern.IsMatch(secret))
                continue;
            Assert.False(text.Contains(secret, StringComparison.Ordinal), $"The {where} contains a secret starting '{secret[..Math.Min(6, secret.Length)]}'.");
        }
    }

    /// <summary>Every table of the server's database, as text (SQLite: the file and its WAL, byte for byte).</summary>
    private async Task<string> ReadDatabaseAsTextAsync()
    {
        if (_provider == Provider.Sqlite)
        {
            var dir = _settings.GetValueOrDefault("DataDir") ?? Path.Combine(DataDir, "data");
            var text = new StringBuilder();
            foreach (var file in new[] { "portcullis.db", "portcullis.db-wal" }.Select(f => Path.Combine(dir, f)).Where(File.Exists))
                text.Append(Encoding.Latin1.GetString(await File.ReadAllBytesAsync(file)));
            return text.ToString();
        }
        if (ConnectionString is null || _existing)
            return "";
        try
        {
            await using var connection = new NpgsqlConnection(ConnectionString);
            await connection.OpenAsync();
            var tables = new List<string>();
            await using (var list = new NpgsqlCommand("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", connection))
            await using (var reader = await list.ExecuteReaderAsync())
                while (await reader.ReadAsync())
                    tables.Add(reader.GetString(0));
            var text = new StringBuilder();
            foreach (var table in tables)
            {
                await using var cmd = new NpgsqlCommand($"SELECT t::text FROM \"{table}\" t", connection);
                await using var reader = await cmd.ExecuteReaderAsync();
                while (await reader.ReadAsync())
                    text.AppendLine(reader.GetString(0));
            }
            return text.ToString();
        }
        catch (NpgsqlException)
        {
            return "";
        }
    }

    /// <summary>Sends raw HTTP/1.1 (for requests HttpClient refuses to make) and returns the status code.</summary>
    public async Task<(int Status, string Response)> RawAsync(string requestHead)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(BaseAddress.Host, BaseAddress.Port);
        await using var stream = tcp.GetStream();
        var bytes = Encoding.Latin1.GetBytes(requestHead.Replace("\n", "\r\n") + "\r\n");
        await stream.WriteAsync(bytes);
        using var reader = new StreamReader(stream, Encoding.Latin1);
        var response = await reader.ReadToEndAsync();
        var status = int.Parse(response.Split(' ', 3)[1]);
        return (status, response);
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

public sealed class SqliteServer : PortcullisServer
{
    public SqliteServer() : base(Provider.Sqlite) { }
}

/// <summary>A server on a fresh PostgreSQL database of its own (with settings added, when made by a test rather than as a fixture).</summary>
public sealed class PostgresServer : PortcullisServer
{
    public PostgresServer() : base(Provider.Postgres) { }

    /// <remarks>Not public: a class fixture may have only one public constructor.</remarks>
    internal PostgresServer(Dictionary<string, string> settings) : base(Provider.Postgres, settings) { }
}
