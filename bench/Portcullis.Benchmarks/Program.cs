using Microsoft.EntityFrameworkCore;
using System.Globalization;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Engines;
using BenchmarkDotNet.Running;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Tokens;
using Portcullis.Users;

namespace Portcullis.Benchmarks;

public static class Program
{
    // Usage: dotnet run -c Release --project bench/Portcullis.Benchmarks -- --filter '*'
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}

/// <summary>
/// In-process verification of an API token that is already in the token cache and whose owner is
/// in the principal cache (docs/decisions.md): parse and checksum, SHA-256, two dictionary lookups, expiry,
/// then the <c>api</c> scope check a management request makes. No database, no HTTP.
/// Target: median ≤ 0.5 µs and 0 B allocated per verification.
/// </summary>
[MemoryDiagnoser]
[MedianColumn, MinColumn, MaxColumn]
// 1 process, 5 warm-up and 15 measured iterations of ~0.5 s each: the whole class runs in about a minute on 2 cores.
[SimpleJob(RunStrategy.Throughput, launchCount: 1, warmupCount: 5, iterationCount: 15)]
public class CachedTokenVerificationBenchmarks
{
    private const int TokenCount = 10_000;
    private const int OwnerCount = 100;

    private CredentialVerifier _verifier = null!;
    private TokenFormat _format = null!;
    private TokenCache _tokenCache = null!;
    private ServiceProvider _services = null!;
    private string[] _tokens = null!;
    private TokenDigest[] _digests = null!;
    private long _nowTicks;
    private int _next;

    [GlobalSetup]
    public void Setup()
    {
        var tokenOptions = Options.Create(new TokenOptions());
        var time = TimeProvider.System;
        // Nothing below touches the database on a cache hit; an empty container satisfies the constructors.
        _services = new ServiceCollection().BuildServiceProvider();
        // A factory that nothing below opens: every benchmark is answered from memory.
        var dbs = new Microsoft.EntityFrameworkCore.Infrastructure.PooledDbContextFactory<Portcullis.Data.PortcullisDb>(
            new DbContextOptionsBuilder<Portcullis.Data.PortcullisDb>().UseSqlite("Data Source=:memory:").Options);

        _format = new TokenFormat(tokenOptions.Value.Prefix);
        _tokenCache = new TokenCache(tokenOptions);
        var principals = new PrincipalCache(dbs, time, tokenOptions);
        var audit = new AuditLog(dbs, time, NullLogger<AuditLog>.Instance, Options.Create(new AuditOptions()));
        var jwtOptions = Options.Create(new JwtOptions());
        var sealing = new Portcullis.Security.KeySealing(Options.Create(new Portcullis.Security.KeysOptions { EncryptionKey = Convert.ToBase64String(new byte[32]) }),
            NullLogger<Portcullis.Security.KeySealing>.Instance);
        var signingKeys = new SigningKeys(dbs, time, audit, sealing, jwtOptions, NullLogger<SigningKeys>.Instance);
        var jwts = new JwtService(signingKeys, jwtOptions, new PublicUrl("http://localhost"), time);
        var revokedJwts = new RevokedJwts(dbs, time, jwtOptions, NullLogger<RevokedJwts>.Instance);
        var clients = new Portcullis.OAuth.ClientCache(dbs, time, tokenOptions);
        var usage = new UsageRecorder(dbs, time, tokenOptions, NullLogger<UsageRecorder>.Instance);
        _verifier = new CredentialVerifier(_format, _tokenCache, principals, usage, new TokenRateLimiter(), jwts, revokedJwts, clients, audit, dbs, time, Options.Create(new Portcullis.ServicePrincipals.ServicesOptions()), NullLogger<CredentialVerifier>.Instance);

        // Fixed "now": entries are loaded at this instant and checked against it, so they never age
        // out of the cache (CacheMaxAge) however long the run takes.
        _nowTicks = time.GetUtcNow().UtcTicks;

        for (var id = 1; id <= OwnerCount; id++)
        {
            var name = "user" + id.ToString(CultureInfo.InvariantCulture);
            principals.Seed(new PrincipalState(id, name, PrincipalKind.User, isAdmin: false, isDisabled: false, ScopeSet.UserRights, credentialVersion: 1, _nowTicks));
        }

        _tokens = new string[TokenCount];
        _digests = new TokenDigest[TokenCount];
        var granted = ScopeSet.FromFlags(ScopeFlags.Api);
        for (var i = 0; i < TokenCount; i++)
        {
            var token = _format.Generate(TokenKind.Personal);
            var digest = TokenFormat.Digest(token);
            var tokenId = i + 1L;
            _tokenCache.Store(digest, new CachedToken
            {
                TokenId = tokenId,
                TokenIdText = tokenId.ToString(CultureInfo.InvariantCulture),
                OwnerId = 1 + i % OwnerCount,
                Scopes = granted,
                Hint = _format.Hint(token),
                ValidUntilTicks = _nowTicks + TimeSpan.TicksPerDay * 30,
                EndsByRevocation = false,
                LoadedAtTicks = _nowTicks,
            }, _tokenCache.Generation);
            _tokens[i] = token;
            _digests[i] = digest;
        }

        // Fail fast if the setup does not produce the path being measured.
        for (var i = 0; i < TokenCount; i++)
        {
            if (!VerifyCachedApiToken())
                throw new InvalidOperationException($"Token {i} was not verified from the cache.");
        }
    }

    [GlobalCleanup]
    public void Cleanup() => _services.Dispose();

    private int NextIndex()
    {
        var i = _next;
        _next = i + 1 == TokenCount ? 0 : i + 1;
        return i;
    }

    /// <summary>The full in-process check: <see cref="CredentialVerifier.TryVerifyCached"/> plus the <c>api</c> scope check.</summary>
    [Benchmark]
    public bool VerifyCachedApiToken()
    {
        var token = _tokens[NextIndex()];
        return _verifier.TryVerifyCached(token, _nowTicks, out var entry, out var owner, out var failure)
            && failure == VerifyFailure.None
            && entry!.Scopes.Allows(ScopeRequirement.Api)
            && owner!.Rights.Allows(ScopeRequirement.Api);
    }

    private static readonly System.Net.IPAddress Client = System.Net.IPAddress.Parse("10.1.2.3");

    /// <summary>
    /// The whole of <see cref="CredentialVerifier.VerifyAsync"/> for a cached token without policies, as a request makes it:
    /// the cached check, then the token policies' checks (none apply), the usage record and the credential.
    /// </summary>
    [Benchmark]
    public async Task<bool> VerifyAsyncCachedApiToken() =>
        (await _verifier.VerifyAsync(_tokens[NextIndex()], Client, CancellationToken.None)).Credential is not null;

    /// <summary>Component: prefix, length, base62 and CRC-32 checksum (<see cref="TokenFormat.TryRead"/>).</summary>
    [Benchmark]
    public bool ParseAndChecksum() => _format.TryRead(_tokens[NextIndex()], out _);

    /// <summary>Component: UTF-8 encoding and SHA-256 of the token (<see cref="TokenFormat.Digest"/>).</summary>
    /// <remarks>Returns the digest's hash code because <see cref="TokenDigest"/> is internal and the benchmark class is public.</remarks>
    [Benchmark]
    public int Sha256Digest() => TokenFormat.Digest(_tokens[NextIndex()]).GetHashCode();

    /// <summary>Component: token-cache lookup by a precomputed digest (<see cref="TokenCache.TryGet"/>).</summary>
    [Benchmark]
    public bool TokenCacheLookup() => _tokenCache.TryGet(_digests[NextIndex()], _nowTicks, out _);
}
