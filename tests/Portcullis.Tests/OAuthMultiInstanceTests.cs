using System.Diagnostics;
using System.Net;
using Portcullis.Tests.Infrastructure;
using static Portcullis.Tests.Infrastructure.OAuthHelpers;

namespace Portcullis.Tests;

/// <summary>
/// Two instances on one PostgreSQL database: revoked JWTs, deleted clients and rotated keys take
/// effect on the other instance at once (LISTEN/NOTIFY).
/// </summary>
public sealed class OAuthMultiInstanceTests(PostgresServer a) : IClassFixture<PostgresServer>, IAsyncLifetime
{
    private PortcullisServer _b = null!;

    public async Task InitializeAsync()
    {
        // One public URL for both, as behind a load balancer: a JWT from one is valid at the other.
        _b = await a.StartSecondInstanceAsync();
    }

    public async Task DisposeAsync() => await _b.DisposeAsync();

    [Fact]
    public async Task AJwtRevokedOnOneInstanceFailsOnTheOther()
    {
        var jwt = await a.LoginAsync();
        using var onB = _b.Client(jwt);
        Assert.Equal(HttpStatusCode.OK, (await onB.GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await a.PostFormAsync("/auth/revoke", [new("token", jwt)])).StatusCode);
        var elapsed = await onB.UntilUnauthorizedAsync();
        Assert.True(elapsed < TimeSpan.FromSeconds(1), $"B still accepted the revoked JWT after {elapsed.TotalMilliseconds} ms");
    }

    [Fact]
    public async Task AnInstanceStartedAfterARevocationKnowsIt()
    {
        var jwt = await a.LoginAsync();
        Assert.Equal(HttpStatusCode.OK, (await a.PostFormAsync("/auth/revoke", [new("token", jwt)])).StatusCode);
        await using var c = PortcullisServer.With(Provider.Postgres,
            new() { ["Database:Provider"] = "postgres", ["Database:ConnectionString"] = a.ConnectionString!, ["PublicUrl"] = a.BaseAddress.ToString().TrimEnd('/') });
        await c.InitializeAsync();
        Assert.Equal(HttpStatusCode.Unauthorized, (await c.Client(jwt).GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await c.Client(await a.LoginAsync()).GetAsync("/api/v1/me")).StatusCode);
    }

    [Fact]
    public async Task ADeletedClientsTokensFailOnTheOtherInstance()
    {
        var admin = await a.AdminTokenAsync();
        var c = await a.CreateClientAsync(admin, ["api"]);
        var jwt = await _b.ClientTokenAsync(c); // issued by B, which now has the client cached
        using var onB = _b.Client(jwt);
        Assert.Equal(HttpStatusCode.OK, (await onB.GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await a.Client(admin).DeleteAsync($"/api/v1/clients/{c.ClientId}")).StatusCode);
        var elapsed = await onB.UntilUnauthorizedAsync();
        Assert.True(elapsed < TimeSpan.FromSeconds(1), $"B still accepted the deleted client's JWT after {elapsed.TotalMilliseconds} ms");
        Assert.Equal(HttpStatusCode.Unauthorized, (await _b.ClientCredentialsAsync(c)).StatusCode);
    }

    [Fact]
    public async Task AKeyRotatedOnOneInstanceSignsOnTheOther()
    {
        using var admin = a.Client(await a.AdminTokenAsync());
        var newKid = (await (await admin.PostAsync("/api/v1/keys/rotate", null)).JsonAsync()).GetProperty("kid").GetString();
        // B learns keys by reloading them all on the change notice, so the new kid appears in its JWKS
        // when B starts signing with it. The JWKS is the probe (a login per probe would time password
        // hashing on a loaded machine more than the notice).
        using var anonymousB = _b.Client();
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromSeconds(5) && !(await anonymousB.GetStringAsync("/.well-known/jwks.json")).Contains(newKid!))
            await Task.Delay(20);
        var learned = watch.Elapsed;
        Assert.True(learned < TimeSpan.FromSeconds(2), $"B learned the new key after {learned.TotalMilliseconds} ms");
        Assert.Equal(newKid, (string?)Header(await _b.LoginAsync())["kid"]);
        // And A verifies what B signs.
        Assert.Equal(HttpStatusCode.OK, (await a.Client(await _b.LoginAsync()).GetAsync("/api/v1/me")).StatusCode);
    }
}
