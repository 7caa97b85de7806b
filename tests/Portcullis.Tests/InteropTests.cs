using System.Diagnostics;
using System.Text.Json;
using Portcullis.Tests.Infrastructure;
using static Portcullis.Tests.Infrastructure.OAuthHelpers;

namespace Portcullis.Tests;

/// <summary>
/// a JWT from <c>/auth/token</c> is validated by a JOSE library that is not ours
/// (Python's <c>joserfc</c>), using nothing but <c>/.well-known/openid-configuration</c> and the JWKS
/// it points to, the way a resource server in another language would.
/// </summary>
public sealed class InteropTests(SqliteServer server) : IClassFixture<SqliteServer>
{
    /// <summary>
    /// Reads the base URL from argv and the token from stdin (never argv, which other users can see);
    /// prints the verified header and claims as JSON; exits 1 when the token does not verify, 3 when
    /// joserfc is missing.
    /// </summary>
    private const string Validator = """
        import json, sys, time, urllib.request
        try:
            from joserfc import jwt
            from joserfc.jwk import KeySet
        except ImportError as e:
            print(f"joserfc is not installed ({e}); install it with: pip install joserfc", file=sys.stderr)
            sys.exit(3)

        def get(url):
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)

        base = sys.argv[1]
        token = sys.stdin.read().strip()
        discovery = get(base + "/.well-known/openid-configuration")
        issuer = discovery["issuer"]
        jwks = get(discovery["jwks_uri"])
        for key in jwks["keys"]:
            leaked = {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key)
            if leaked:
                print(f"JWKS key {key.get('kid')} has private members {sorted(leaked)}", file=sys.stderr)
                sys.exit(1)
        try:
            decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"])
            if decoded.header.get("typ") != "at+jwt":
                raise ValueError(f"typ is {decoded.header.get('typ')!r}, not 'at+jwt'")
            registry = jwt.JWTClaimsRegistry(
                leeway=30,
                iss={"essential": True, "value": issuer},
                aud={"essential": True, "value": "portcullis"},
                exp={"essential": True}, iat={"essential": True}, sub={"essential": True}, jti={"essential": True})
            registry.validate(decoded.claims)
        except Exception as e:
            print(f"token rejected: {type(e).__name__}: {e}", file=sys.stderr)
            sys.exit(1)
        print(json.dumps({"header": decoded.header, "claims": decoded.claims}))
        """;

    private async Task<(int ExitCode, string Stdout, string Stderr)> ValidateAsync(string token)
    {
        var script = Path.Combine(Path.GetTempPath(), $"portcullis-interop-{Guid.NewGuid():N}.py");
        await File.WriteAllTextAsync(script, Validator);
        try
        {
            var psi = new ProcessStartInfo("python3")
            {
                RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            };
            psi.ArgumentList.Add(script);
            psi.ArgumentList.Add(server.BaseAddress.ToString().TrimEnd('/'));
            Process process;
            try
            {
                process = Process.Start(psi)!;
            }
            catch (System.ComponentModel.Win32Exception e)
            {
                Assert.Fail($"python3 is needed for the interoperability test and could not be started ({e.Message}). Install python3 and joserfc (pip install joserfc).");
                throw;
            }
            using (process)
            {
                await process.StandardInput.WriteAsync(token);
                process.StandardInput.Close();
                var stdout = process.StandardOutput.ReadToEndAsync();
                var stderr = process.StandardError.ReadToEndAsync();
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
                await process.WaitForExitAsync(timeout.Token);
                var result = (process.ExitCode, await stdout, await stderr);
                Assert.True(result.ExitCode != 3, $"The interoperability test needs Python's joserfc, which is missing: {result.Item3}");
                return result;
            }
        }
        finally
        {
            File.Delete(script);
        }
    }

    [Fact]
    public async Task JoserfcValidatesOurTokensFromDiscoveryAlone()
    {
        var password = await server.LoginAsync();
        var (code, stdout, stderr) = await ValidateAsync(password);
        Assert.True(code == 0, $"joserfc rejected a password-grant token: {stderr}");
        var verified = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal("admin", verified.GetProperty("claims").GetProperty("sub").GetString());
        Assert.Equal("ES256", verified.GetProperty("header").GetProperty("alg").GetString());

        var c = await server.CreateClientAsync(await server.AdminTokenAsync(), ["services"]);
        var client = await server.ClientTokenAsync(c);
        (code, stdout, stderr) = await ValidateAsync(client);
        Assert.True(code == 0, $"joserfc rejected a client-credentials token: {stderr}");
        var claims = JsonDocument.Parse(stdout).RootElement.GetProperty("claims");
        Assert.Equal(c.ClientId, claims.GetProperty("sub").GetString());
        Assert.Equal(c.ClientId, claims.GetProperty("client_id").GetString());
        Assert.Equal("services", claims.GetProperty("scope").GetString());
    }

    [Fact]
    public async Task JoserfcRejectsATamperedToken()
    {
        var jwt = await server.LoginAsync();
        var payload = Payload(jwt);
        payload["scope"] = "api services admin";
        payload["sub"] = "someone-else";
        var parts = jwt.Split('.');
        var (code, _, stderr) = await ValidateAsync(parts[0] + "." + Encode(payload) + "." + parts[2]);
        Assert.True(code == 1, $"joserfc accepted a tampered token (exit {code}): {stderr}");
    }

    [Fact]
    public async Task JoserfcValidatesTokensOfBothKeysAfterARotation()
    {
        var before = await server.LoginAsync();
        Assert.Equal(System.Net.HttpStatusCode.OK, (await server.Client(await server.AdminTokenAsync()).PostAsync("/api/v1/keys/rotate", null)).StatusCode);
        var after = await server.LoginAsync();
        Assert.NotEqual((string?)Header(before)["kid"], (string?)Header(after)["kid"]);
        foreach (var token in new[] { before, after })
        {
            var (code, _, stderr) = await ValidateAsync(token);
            Assert.True(code == 0, $"joserfc rejected a token after rotation: {stderr}");
        }
    }
}
