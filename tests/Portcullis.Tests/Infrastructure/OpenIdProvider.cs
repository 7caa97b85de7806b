using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Portcullis.Tests.Infrastructure;

/// <summary>
/// A real OpenID Provider on loopback: <c>oidc-provider</c> (certified; from the npm registry, pinned in Oidc/package.json)
/// run by Node with Oidc/provider.mjs. Its port is chosen first, so that Portcullis can be configured with it before the
/// provider is started with Portcullis's callback. People and their groups are a JSON file read at every login; the
/// signing key can be replaced (a restart with another key, as a provider rotating its keys).
/// </summary>
public sealed class OpenIdProvider : IAsyncDisposable
{
    public const string ClientId = "portcullis-tests";
    public static readonly string ClientSecret = "secret-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));

    private readonly string _dir = Directory.CreateTempSubdirectory("portcullis-idp-").FullName;
    private readonly StringBuilder _output = new();
    private Process? _process;

    public OpenIdProvider()
    {
        Port = PortcullisServer.FreePort();
        RotateKey();
        SetAccounts(new());
    }

    public int Port { get; }

    public string Url => $"http://127.0.0.1:{Port}";

    public string Output
    {
        get { lock (_output) return _output.ToString(); }
    }

    /// <summary>Who may log in (any password) and their groups.</summary>
    public void SetAccounts(Dictionary<string, string[]> groups) =>
        File.WriteAllText(Path.Combine(_dir, "accounts.json"), JsonSerializer.Serialize(groups.ToDictionary(g => g.Key, g => new { groups = g.Value })));

    /// <summary>A new signing key for the next start; the old one is no longer published.</summary>
    public void RotateKey()
    {
        using var rsa = RSA.Create(2048);
        var p = rsa.ExportParameters(true);
        var jwk = new Dictionary<string, string>
        {
            ["kty"] = "RSA", ["kid"] = "k" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6)), ["use"] = "sig", ["alg"] = "RS256",
            ["n"] = B64(p.Modulus!), ["e"] = B64(p.Exponent!), ["d"] = B64(p.D!), ["p"] = B64(p.P!), ["q"] = B64(p.Q!),
            ["dp"] = B64(p.DP!), ["dq"] = B64(p.DQ!), ["qi"] = B64(p.InverseQ!),
        };
        File.WriteAllText(Path.Combine(_dir, "jwks.json"), JsonSerializer.Serialize(new { keys = new[] { jwk } }));

        static string B64(byte[] b) => Convert.ToBase64String(b).TrimEnd('=').Replace('+', '-').Replace('/', '_');
    }

    /// <summary>
    /// Starts (or restarts, e.g. after <see cref="RotateKey"/>) the provider for the Portcullis servers at <paramref name="servers"/>,
    /// which know it as <paramref name="name"/>.
    /// </summary>
    public async Task StartAsync(string name, params Uri[] servers)
    {
        await StopAsync();
        var modules = Path.Combine(ProviderDirectory, "node_modules", "oidc-provider");
        if (!Directory.Exists(modules))
        {
            var (exitCode, output, error) = await ExternalTool.RunAsync("npm", ["ci", "--no-audit", "--no-fund", "--prefix", ProviderDirectory],
                "npm installs the test OpenID Provider (oidc-provider); ./test.sh installs Debian's npm.", TimeSpan.FromMinutes(4));
            Assert.True(exitCode == 0, $"npm ci failed:\n{output}\n{error}");
        }
        var roots = servers.Select(s => s.ToString().TrimEnd('/')).ToList();
        var psi = new ProcessStartInfo("node") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = ProviderDirectory };
        psi.ArgumentList.Add(Path.Combine(ProviderDirectory, "provider.mjs"));
        psi.Environment["PORT"] = Port.ToString(System.Globalization.CultureInfo.InvariantCulture);
        psi.Environment["CLIENT_ID"] = ClientId;
        psi.Environment["CLIENT_SECRET"] = ClientSecret;
        psi.Environment["REDIRECT_URIS"] = string.Join(' ', roots.Select(root => $"{root}/login/oidc/{name}/callback"));
        psi.Environment["POST_LOGOUT_REDIRECT_URIS"] = string.Join(' ', roots.Select(root => $"{root}/login"));
        psi.Environment["ACCOUNTS"] = Path.Combine(_dir, "accounts.json");
        psi.Environment["JWKS"] = Path.Combine(_dir, "jwks.json");
        var process = Process.Start(psi)!;
        process.OutputDataReceived += (_, e) => Append(e.Data);
        process.ErrorDataReceived += (_, e) => Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _process = process;
        switch (await PortWait.ForListenerAsync(process, Port, TimeSpan.FromSeconds(30), TimeSpan.FromMilliseconds(100)))
        {
            case PortWait.Outcome.Exited:
                throw new InvalidOperationException($"the OpenID Provider exited with {process.ExitCode}:\n{Output}");
            case PortWait.Outcome.TimedOut:
                throw new TimeoutException($"the OpenID Provider did not start:\n{Output}");
        }
    }

    private static string ProviderDirectory => Path.Combine(ClusterTests.RepositoryRoot(), "tests", "Portcullis.Tests", "Oidc");

    private void Append(string? line)
    {
        if (line is null)
            return;
        lock (_output)
            _output.AppendLine(line);
    }

    private async Task StopAsync()
    {
        if (_process is { } process)
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync();
            }
            process.Dispose();
            _process = null;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        Directory.Delete(_dir, recursive: true);
    }
}
