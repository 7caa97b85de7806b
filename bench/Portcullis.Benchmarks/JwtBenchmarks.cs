using Microsoft.EntityFrameworkCore;
using System.Security.Cryptography;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Engines;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Tokens;
using Portcullis.Users;
using Portcullis.OAuth;

namespace Portcullis.Benchmarks;

/// <summary>
/// ES256 access tokens in process : issuing one (what the client-credentials grant pays per
/// request besides HTTP), the bare ECDSA P-256 signature under it (t_sign of the throughput floor), and
/// validating one with the signing key already loaded: <see cref="JwtService.ValidateAsync"/> alone and the
/// whole <see cref="CredentialVerifier.VerifyAsync"/> path (deny-list and owner checks from memory).
/// </summary>
[MemoryDiagnoser]
[MedianColumn, MinColumn, MaxColumn]
[SimpleJob(RunStrategy.Throughput, launchCount: 1, warmupCount: 5, iterationCount: 15)]
public class JwtBenchmarks
{
    private const int TokenCount = 1_000;

    private SqliteConnection _connection = null!;
    private ServiceProvider _services = null!;
    private JwtService _jwts = null!;
    private CredentialVerifier _verifier = null!;
    private ECDsa _ecdsa = null!;
    private byte[] _signingInput = null!;
    private string[] _tokens = null!;
    private int _next;

    [GlobalSetup]
    public void Setup() => SetupAsync().GetAwaiter().GetResult();

    private async Task SetupAsync()
    {
        // The keys come from the database at start, as in the server: an in-memory SQLite one here.
        _connection = new SqliteConnection("Data Source=:memory:");
        await _connection.OpenAsync();
        await new Migrator(_connection, false, NullLogger.Instance).MigrateAsync();

        _services = new ServiceCollection().BuildServiceProvider();
        // A factory that nothing below opens: every benchmark is answered from memory.
        var dbs = new Microsoft.EntityFrameworkCore.Infrastructure.PooledDbContextFactory<Portcullis.Data.PortcullisDb>(
            new DbContextOptionsBuilder<Portcullis.Data.PortcullisDb>().UseSqlite("Data Source=:memory:").Options);
        var time = TimeProvider.System;
        var tokenOptions = Options.Create(new TokenOptions());
        var jwtOptions = Options.Create(new JwtOptions());
        var audit = new AuditLog(dbs, time, NullLogger<AuditLog>.Instance, Options.Create(new AuditOptions()));
        var sealing = new Portcullis.Security.KeySealing(Options.Create(new Portcullis.Security.KeysOptions { EncryptionKey = Convert.ToBase64String(new byte[32]) }),
            NullLogger<Portcullis.Security.KeySealing>.Instance);
        var keys = new SigningKeys(dbs, time, audit, sealing, jwtOptions, NullLogger<SigningKeys>.Instance);
        await sealing.PrepareAsync(_connection, Path.GetTempPath(), CancellationToken.None);
        await keys.LoadAsync(_connection, CancellationToken.None);
        _jwts = new JwtService(keys, jwtOptions, new PublicUrl("http://127.0.0.1:8080"), time);

        var principals = new PrincipalCache(dbs, time, tokenOptions);
        var nowTicks = time.GetUtcNow().UtcTicks + TimeSpan.TicksPerDay; // never ages out during the run
        principals.Seed(new PrincipalState(1, "alice", PrincipalKind.User, isAdmin: false, isDisabled: false, ScopeSet.UserRights, credentialVersion: 1, nowTicks));
        var revoked = new RevokedJwts(dbs, time, jwtOptions, NullLogger<RevokedJwts>.Instance);
        _verifier = new CredentialVerifier(new TokenFormat("pc"), new TokenCache(tokenOptions), principals,
            new UsageRecorder(dbs, time, tokenOptions, NullLogger<UsageRecorder>.Instance), new TokenRateLimiter(), _jwts, revoked,
            new Portcullis.OAuth.ClientCache(dbs, time, tokenOptions), audit, dbs, time, Options.Create(new Portcullis.ServicePrincipals.ServicesOptions()), NullLogger<CredentialVerifier>.Instance);

        _tokens = new string[TokenCount];
        for (var i = 0; i < TokenCount; i++)
            _tokens[i] = _jwts.Issue("alice", ScopeSet.UserRights, TimeSpan.FromHours(1), 1, 1, FirstPartyClients.Portcullis).AccessToken;

        _ecdsa = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        // A signing input of the size our tokens have (header.payload, base64url).
        _signingInput = System.Text.Encoding.ASCII.GetBytes(_tokens[0][.._tokens[0].LastIndexOf('.')]);

        for (var i = 0; i < TokenCount; i++)
        {
            if (!await ValidateJwtFirstSight() || !await ValidateJwt() || !await VerifyJwtCredential())
                throw new InvalidOperationException($"Token {i} did not validate.");
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _services.Dispose();
        _connection.Dispose();
        _ecdsa.Dispose();
    }

    private string Next()
    {
        var i = _next;
        _next = i + 1 == TokenCount ? 0 : i + 1;
        return _tokens[i];
    }

    /// <summary>t_sign: one ES256 (ECDSA P-256, SHA-256) signature over a token-sized signing input.</summary>
    [Benchmark]
    public int EcdsaP256Sign() => _ecdsa.SignData(_signingInput, HashAlgorithmName.SHA256).Length;

    /// <summary>A whole access token: claims, header, payload, ES256 signature, serialisation.</summary>
    [Benchmark]
    public int IssueAccessToken() => _jwts.Issue("alice", ScopeSet.UserRights, TimeSpan.FromHours(1), 1, 1, FirstPartyClients.Portcullis).AccessToken.Length;

    /// <summary>First sight of a token: header checks, ECDSA signature, iss/aud/typ/exp/nbf/iat/jti, key already loaded.</summary>
    [Benchmark]
    public async Task<bool> ValidateJwtFirstSight() => await _jwts.ValidateUncachedAsync(Next()) is not null;

    /// <summary>A token seen before: SHA-256 of its text, a lookup, the expiry check.</summary>
    [Benchmark]
    public async Task<bool> ValidateJwt() => await _jwts.ValidateAsync(Next()) is not null;

    /// <summary>What a request with a JWT seen before pays: validation plus the deny-list and the owner's current state.</summary>
    [Benchmark]
    public async Task<bool> VerifyJwtCredential() => (await _verifier.VerifyAsync(Next(), null, CancellationToken.None)).Credential is not null;
}
