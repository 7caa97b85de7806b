using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using CsCheck;
using Portcullis.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Portcullis.Tests;

/// <summary>Two instances on one PostgreSQL database, with one public URL as behind a load balancer.</summary>
public sealed class PostgresPair : IAsyncLifetime
{
    public PostgresServer A { get; } = new();
    public PortcullisServer B { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        await A.InitializeAsync();
        B = PortcullisServer.With(Provider.Postgres, new()
        {
            ["Database:Provider"] = "postgres", ["Database:ConnectionString"] = A.ConnectionString!, ["PublicUrl"] = A.BaseAddress.ToString().TrimEnd('/'),
        });
        await B.InitializeAsync();
    }

    public async Task DisposeAsync()
    {
        await B.DisposeAsync();
        await A.DisposeAsync();
    }
}

/// <summary>
/// Model-based: random sequences of credential operations (create, rotate with and without grace, revoke, log in, log out,
/// disable, enable, reset or change the password, promote, demote, rotate the signing key; create an OAuth client, take
/// its token, rotate its secret, delete it; create a token with policies: allowed addresses that do or do not include the
/// tests' own, a use limit and a rate limit too high to be reached; narrow a token to 'api'; hand a token over as a
/// one-time link and claim it on the other instance), each sent to one of two instances, and after every step every credential
/// ever issued in the sequence is checked, on one of the two instances, against a small model of who may do what.
/// CsCheck generates the sequences and, when one fails, shrinks it and prints the shortest it found.
/// </summary>
public sealed class ModelBasedTests(PostgresPair pair, ITestOutputHelper output) : IClassFixture<PostgresPair>
{
    private enum Kind
    {
        CreateToken, LogIn, Revoke, Rotate, RotateWithGrace, Disable, Enable, ResetPassword, RotateSigningKey, Promote, Demote,
        LogOut, ChangePassword, CreateClient, ClientToken, RotateClientSecret, DeleteClient, CreateFencedToken, Narrow, HandOver,
    }

    private sealed record Op(Kind Kind, int User, int Target, int Instance)
    {
        public override string ToString() => Kind switch
        {
            Kind.Revoke or Kind.Rotate or Kind.RotateWithGrace or Kind.LogOut => $"{Kind}(credential {Target}) on {"AB"[Instance]}",
            Kind.ClientToken or Kind.RotateClientSecret or Kind.DeleteClient => $"{Kind}(client {Target}) on {"AB"[Instance]}",
            Kind.RotateSigningKey => $"{Kind} on {"AB"[Instance]}",
            _ => $"{Kind}(user {User}) on {"AB"[Instance]}",
        };
    }

    /// <summary>What the model knows of one credential.</summary>
    private sealed class Credential(string secret, int user, string? tokenId, int version, bool admin, ClientModel? client = null, bool? reachable = null)
    {
        /// <summary>For a token with policies: whether its allowed addresses include the tests' (null: a token without policies).</summary>
        public bool? Reachable { get; } = reachable;

        public string Secret { get; } = secret;
        public int User { get; } = user;
        public string? TokenId { get; } = tokenId;   // null for a JWT
        public int Version { get; } = version;       // a JWT's owner's credential version when it was issued
        public bool Admin { get; set; } = admin;     // granted the admin scope (its owner was an admin when it was made; narrowing takes it away)
        public ClientModel? Client { get; } = client; // the client a client-credentials JWT was issued to
        public int SecretVersion { get; } = client?.SecretVersion ?? 0;
        public bool Revoked { get; set; }
        public bool Rotated { get; set; }
    }

    /// <summary>An OAuth client with the <c>api</c> scope, owned by a user.</summary>
    private sealed class ClientModel(OAuthHelpers.ClientCredentials credentials, int user)
    {
        public OAuthHelpers.ClientCredentials Credentials { get; set; } = credentials;
        public int User { get; } = user;
        public int SecretVersion { get; set; }
        public bool Deleted { get; set; }
    }

    private sealed class UserModel(string name, string password)
    {
        public string Name { get; } = name;
        public string Password { get; set; } = password;
        public bool Disabled { get; set; }
        public bool Admin { get; set; }
        public int Version { get; set; }
    }

    private static readonly Gen<Op> GenOp = Gen.Select(Gen.Int[0, (int)Kind.HandOver], Gen.Int[0, 1], Gen.Int[0, 15], Gen.Int[0, 1],
        (kind, user, target, instance) => new Op((Kind)kind, user, target, instance));

    [Fact]
    public async Task EveryCredentialAnswersAsTheModelSaysAfterEveryStepOnEitherInstance()
    {
        var admin = await pair.A.AdminTokenAsync();
        var sequences = 0;
        await GenOp.Array[1, 8].SampleAsync(async ops =>
        {
            Interlocked.Increment(ref sequences);
            try
            {
                await RunAsync(admin, ops);
            }
            catch (Xunit.Sdk.XunitException e) when (ServerFailures() is { Length: > 0 } failures)
            {
                // An unexpected 503 or 500 is explained by what the servers logged, which the report would not show otherwise.
                throw new Xunit.Sdk.XunitException($"{e.Message}\nThe servers logged:\n{failures}");
            }
        }, time: 40, threads: 1, print: ops => string.Join(", ", ops));
        output.WriteLine($"{sequences} sequences run");
        Assert.True(sequences >= 40, $"only {sequences} sequences ran in the time given");
    }

    /// <summary>The last failures both servers logged, with the lines that follow each (the exception).</summary>
    private string ServerFailures() => string.Join('\n', new[] { pair.A, pair.B }.SelectMany(server =>
    {
        var lines = server.Output.Split('\n');
        return lines.Select((line, i) => (line, i)).Where(x => x.line.Contains("fail:", StringComparison.Ordinal))
            .TakeLast(3).SelectMany(x => lines.Skip(x.i).Take(8));
    }));

    private PortcullisServer On(int instance) => instance == 0 ? pair.A : pair.B;

    /// <summary>
    /// The two users every sequence acts on. Creating users costs two password hashes, which would leave time for only
    /// a few dozen sequences; so they are made once, and each sequence starts by enabling and demoting them (no hash).
    /// The model is relative to the sequence's start: only credentials issued within it are checked, against versions it counted.
    /// </summary>
    private readonly List<UserModel> _users = [];

    private async Task<List<UserModel>> FreshUsersAsync(string admin)
    {
        using var asAdmin = pair.A.Client(admin);
        for (var i = _users.Count; i < 2; i++)
        {
            var user = new UserModel("model-" + Guid.NewGuid().ToString("N")[..10], Remember("pw-" + Guid.NewGuid().ToString("N")));
            using var created = await asAdmin.PostAsJsonAsync("/api/v1/users", new { username = user.Name, password = user.Password });
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
            _users.Add(user);
        }
        foreach (var user in _users)
        {
            using var reset = await asAdmin.PatchAsJsonAsync($"/api/v1/users/{user.Name}", new { disabled = false, admin = false });
            Assert.Equal(HttpStatusCode.OK, reset.StatusCode);
            (user.Disabled, user.Admin, user.Version) = (false, false, 0);
        }
        return _users;
    }

    private async Task RunAsync(string admin, Op[] ops)
    {
        var users = await FreshUsersAsync(admin);
        var credentials = new List<Credential>();
        var clients = new List<ClientModel>();
        for (var step = 0; step < ops.Length; step++)
        {
            var op = ops[step];
            var server = On(op.Instance);
            using var asAdmin = server.Client(admin);
            var user = users[op.User];
            var target = credentials.Count == 0 ? null : credentials[op.Target % credentials.Count];
            var client = clients.Count == 0 ? null : clients[op.Target % clients.Count];
            // A credential the user could act with now: an API token or their own JWT, alive by the model.
            // A token with policies may not change a password or make a client, so it is not one of those.
            var usable = credentials.LastOrDefault(c => c.User == op.User && c.Client is null && c.Reachable is null && IsValid(c, users));
            switch (op.Kind)
            {
                case Kind.CreateToken when !user.Disabled:
                {
                    using var response = await asAdmin.PostAsJsonAsync("/api/v1/tokens", new
                    {
                        name = "model-" + Guid.NewGuid().ToString("N")[..8], owner = user.Name, scopes = user.Admin ? new[] { "api", "admin" } : ["api"],
                    });
                    Assert.Equal(HttpStatusCode.Created, response.StatusCode);
                    var body = await response.JsonAsync();
                    credentials.Add(new Credential(Remember(body.GetProperty("token").GetString()!), op.User, body.GetProperty("id").ToString(), user.Version, user.Admin));
                    break;
                }
                case Kind.CreateFencedToken when !user.Disabled:
                {
                    // Allowed from the tests' loopback or not at all; a use limit and a rate limit that the sequence cannot reach,
                    // so that every use is counted in the database and takes from the buckets, on both instances.
                    var reachable = op.Target % 2 == 0;
                    using var response = await asAdmin.PostAsJsonAsync("/api/v1/tokens", new
                    {
                        name = "model-" + Guid.NewGuid().ToString("N")[..8], owner = user.Name, scopes = user.Admin ? new[] { "api", "admin" } : ["api"],
                        allowed_cidrs = reachable ? new[] { "127.0.0.0/8", "::1/128" } : ["192.0.2.0/24"], max_uses = 100_000, rate_limit = new { per_minute = 100_000 },
                    });
                    Assert.Equal(HttpStatusCode.Created, response.StatusCode);
                    var body = await response.JsonAsync();
                    credentials.Add(new Credential(Remember(body.GetProperty("token").GetString()!), op.User, body.GetProperty("id").ToString(), user.Version, user.Admin,
                        reachable: reachable));
                    break;
                }
                case Kind.Narrow when target is { TokenId: { } id, Revoked: false, Rotated: false }:
                {
                    // Down to 'api': an admin token loses the admin endpoints from now on, on both instances; an 'api' one is as it was.
                    using var response = await asAdmin.PostAsJsonAsync($"/api/v1/tokens/{id}/narrow", new { scopes = new[] { "api" } });
                    Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                    target.Admin = false;
                    break;
                }
                case Kind.HandOver when !user.Disabled:
                {
                    // Made on one instance, claimed on the other: the token works from the claim on.
                    using var response = await asAdmin.PostAsJsonAsync("/api/v1/tokens", new
                    {
                        name = "model-" + Guid.NewGuid().ToString("N")[..8], owner = user.Name, scopes = user.Admin ? new[] { "api", "admin" } : ["api"],
                        deliver = "link", link_expires_in_minutes = 10,
                    });
                    Assert.Equal(HttpStatusCode.Created, response.StatusCode);
                    var body = await response.JsonAsync();
                    var link = new Uri(body.GetProperty("claim_url").GetString()!);
                    Remember(link.Segments[^1]);
                    using var claim = new HttpRequestMessage(HttpMethod.Post, new Uri(On(1 - op.Instance).BaseAddress, link.AbsolutePath));
                    claim.Headers.Accept.ParseAdd("application/json");
                    using var anonymous = new HttpClient();
                    using var claimed = await anonymous.SendAsync(claim);
                    Assert.Equal(HttpStatusCode.OK, claimed.StatusCode);
                    credentials.Add(new Credential(Remember((await claimed.JsonAsync()).GetProperty("token").GetString()!), op.User,
                        body.GetProperty("id").ToString(), user.Version, user.Admin));
                    break;
                }
                case Kind.LogIn when !user.Disabled:
                    credentials.Add(new Credential(await server.LoginAsync(user.Name, user.Password), op.User, null, user.Version, user.Admin));
                    break;
                case Kind.Revoke when target is { TokenId: { } id, Revoked: false }:
                    Assert.Equal(HttpStatusCode.NoContent, (await asAdmin.DeleteAsync($"/api/v1/tokens/{id}")).StatusCode);
                    target.Revoked = true;
                    break;
                case Kind.Rotate or Kind.RotateWithGrace when target is { TokenId: { } id, Revoked: false, Rotated: false } && !users[target.User].Disabled:
                {
                    var grace = op.Kind == Kind.RotateWithGrace ? 3600 : 0;
                    using var response = await asAdmin.PostAsJsonAsync($"/api/v1/tokens/{id}/rotate", new { grace_seconds = grace });
                    if (target.Admin && !users[target.User].Admin)
                    {
                        // The successor would carry the admin scope its owner no longer holds.
                        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
                        break;
                    }
                    Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                    var body = await response.JsonAsync();
                    credentials.Add(new Credential(Remember(body.GetProperty("token").GetString()!), target.User, body.GetProperty("id").ToString(), 0, target.Admin,
                        reachable: target.Reachable));
                    target.Rotated = true;
                    target.Revoked |= grace == 0;
                    break;
                }
                case Kind.Disable when !user.Disabled:
                    Assert.Equal(HttpStatusCode.OK, (await asAdmin.PatchAsJsonAsync($"/api/v1/users/{user.Name}", new { disabled = true })).StatusCode);
                    user.Disabled = true;
                    user.Version++;
                    break;
                case Kind.Enable when user.Disabled:
                    Assert.Equal(HttpStatusCode.OK, (await asAdmin.PatchAsJsonAsync($"/api/v1/users/{user.Name}", new { disabled = false })).StatusCode);
                    user.Disabled = false;
                    break;
                case Kind.ResetPassword:
                    user.Password = Remember("pw-" + Guid.NewGuid().ToString("N"));
                    Assert.Equal(HttpStatusCode.OK, (await asAdmin.PatchAsJsonAsync($"/api/v1/users/{user.Name}", new { password = user.Password })).StatusCode);
                    user.Version++;
                    break;
                case Kind.Promote or Kind.Demote when user.Admin != (op.Kind == Kind.Promote):
                    user.Admin = op.Kind == Kind.Promote;
                    Assert.Equal(HttpStatusCode.OK, (await asAdmin.PatchAsJsonAsync($"/api/v1/users/{user.Name}", new { admin = user.Admin })).StatusCode);
                    break;
                case Kind.LogOut when target is { TokenId: null, Client: null, Revoked: false }:
                {
                    // The JWT is revoked at the revocation endpoint (RFC 7009), which is how a CLI logs out.
                    using var anonymous = server.Client();
                    using var response = await anonymous.PostAsync("/auth/revoke", new FormUrlEncodedContent([new("token", target.Secret)]));
                    Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                    target.Revoked = true;
                    break;
                }
                case Kind.ChangePassword when usable is not null:
                {
                    var password = Remember("pw-" + Guid.NewGuid().ToString("N"));
                    using var asUser = server.Client(usable.Secret);
                    using var response = await asUser.PostAsJsonAsync("/api/v1/me/password", new { current_password = user.Password, new_password = password });
                    Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
                    user.Password = password;
                    user.Version++;
                    break;
                }
                case Kind.CreateClient when usable is not null:
                    clients.Add(new ClientModel(await server.CreateClientAsync(usable.Secret, ["api"]), op.User));
                    break;
                case Kind.ClientToken when client is { Deleted: false } && !users[client.User].Disabled:
                    credentials.Add(new Credential(await server.ClientTokenAsync(client.Credentials), client.User, null, users[client.User].Version, false, client));
                    break;
                case Kind.RotateClientSecret when client is { Deleted: false }:
                {
                    using var response = await asAdmin.PostAsync($"/api/v1/clients/{client.Credentials.ClientId}/rotate-secret", null);
                    Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                    client.Credentials = client.Credentials with { ClientSecret = Remember((await response.JsonAsync()).GetProperty("client_secret").GetString()!) };
                    client.SecretVersion++;
                    break;
                }
                case Kind.DeleteClient when client is { Deleted: false }:
                    Assert.Equal(HttpStatusCode.NoContent, (await asAdmin.DeleteAsync($"/api/v1/clients/{client.Credentials.ClientId}")).StatusCode);
                    client.Deleted = true;
                    break;
                case Kind.RotateSigningKey:
                    // Changes no credential: JWTs of the old key keep working, and the new key signs on both instances.
                    Assert.Equal(HttpStatusCode.OK, (await asAdmin.PostAsync("/api/v1/keys/rotate", null)).StatusCode);
                    break;
                default:
                    continue; // not applicable in this state: the step changes nothing
            }
            await CheckAsync(ops, step, users, credentials);
        }
    }

    /// <summary>Every credential answers as the model says, within a second (the time a change may take to reach the other instance).</summary>
    private async Task CheckAsync(Op[] ops, int step, List<UserModel> users, List<Credential> credentials)
    {
        for (var i = 0; i < credentials.Count; i++)
        {
            var c = credentials[i];
            var owner = users[c.User];
            var valid = IsValid(c, users);
            // A live token used from outside its allowed addresses is refused (403) before anything else is looked at.
            var expected = !valid ? HttpStatusCode.Unauthorized : c.Reachable == false ? HttpStatusCode.Forbidden : HttpStatusCode.OK;
            // An admin endpoint: granted scopes meet the owner's current rights.
            var expectedAdmin = expected != HttpStatusCode.OK ? expected : c.Admin && owner.Admin ? HttpStatusCode.OK : HttpStatusCode.Forbidden;
            // Each credential is checked on the instance that did not take the step, and on the one that did.
            foreach (var server in new[] { On(1 - ops[step].Instance), On(ops[step].Instance) })
            {
                using var client = server.Client(c.Secret);
                foreach (var (path, want) in new[] { ("/api/v1/me", expected), ("/api/v1/users/" + owner.Name, expectedAdmin) })
                {
                    var watch = Stopwatch.StartNew();
                    HttpStatusCode actual;
                    while ((actual = (await client.GetAsync(path)).StatusCode) != want && watch.Elapsed < TimeSpan.FromSeconds(1))
                        await Task.Delay(20);
                    Assert.True(actual == want,
                        $"after step {step + 1} ({ops[step]}), credential {i} ({(c.TokenId is not null ? "token " + c.TokenId : c.Client is null ? "JWT" : "client JWT")} of user {c.User}) " +
                        $"answered {(int)actual} at {path} on {(server == pair.A ? "A" : "B")}; the model says {(int)want}");
                }
            }
        }
    }

    /// <summary>
    /// The model: an API token lives until revoked; a JWT until logged out or its owner's credentials change (a password
    /// change, a reset or a disable); a client's JWT also until its client is deleted or its secret rotated. A disabled owner stops all.
    /// </summary>
    private static bool IsValid(Credential c, List<UserModel> users)
    {
        var owner = users[c.User];
        if (owner.Disabled || c.Revoked)
            return false;
        if (c.TokenId is not null)
            return true;
        return c.Version == owner.Version && (c.Client is null || (!c.Client.Deleted && c.Client.SecretVersion == c.SecretVersion));
    }

    private static string Remember(string secret)
    {
        PortcullisServer.Secrets.Add(secret);
        return secret;
    }
}
