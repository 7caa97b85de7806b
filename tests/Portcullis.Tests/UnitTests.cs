using Microsoft.Extensions.Options;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Tokens;

namespace Portcullis.Tests;

/// <summary>The small pieces the verification path is built from.</summary>
public sealed class UnitTests
{
    [Fact]
    public void TheChecksumIsZlibsCrc32()
    {
        // zlib.crc32(b"123456789") == 0xCBF43926: scripts in other languages check tokens with zlib (bench/scale_seed.py does).
        Assert.Equal(0xCBF43926u, System.IO.Hashing.Crc32.HashToUInt32("123456789"u8));
        Assert.Equal(0u, System.IO.Hashing.Crc32.HashToUInt32([]));
    }

    [Fact]
    public void GeneratedTokensCarryAValidChecksumAndAreDistinct()
    {
        var format = new TokenFormat("pc");
        var tokens = Enumerable.Range(0, 1000).Select(_ => format.Generate(TokenKind.Service)).ToHashSet();
        Assert.Equal(1000, tokens.Count);
        foreach (var token in tokens)
        {
            Assert.True(format.TryRead(token, out var kind));
            Assert.Equal(TokenKind.Service, kind);
            Assert.Equal(TokensApiTests.Checksum(token[..34]), token[34..]);
        }
    }

    [Theory]
    [InlineData("pcp_0000000000000000000000000000000000")]
    [InlineData("pcx_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")]
    [InlineData("pcp-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")]
    [InlineData("pcp_AAAA")]
    [InlineData("")]
    public void LookAlikesAreNotTokens(string text) => Assert.False(new TokenFormat("pc").TryRead(text, out _));

    [Fact]
    public void ThePrefixIsConfigurable()
    {
        var format = new TokenFormat("acme");
        var token = format.Generate(TokenKind.Personal);
        Assert.StartsWith("acmep_", token);
        Assert.True(format.TryRead(token, out _));
        Assert.False(new TokenFormat("pc").TryRead(token, out _));
        Assert.Matches(format.RegexPattern, token);
    }

    [Fact]
    public void ScopesIntersectAsRightsDo()
    {
        ScopeSet Parse(params string[] names) => ScopeSet.TryParse(names, out var s, out _) ? s : throw new ArgumentException();
        var user = ScopeSet.UserRights;
        Assert.Equal("api services", Parse("admin").Intersect(user).ToString());
        Assert.Equal("services:model", Parse("api", "services:model").Intersect(Parse("services")).ToString());
        Assert.True(Parse("services").Allows(ScopeRequirement.ForService("anything")));
        Assert.False(Parse("services:a").Allows(ScopeRequirement.ForService("b")));
        Assert.False(Parse("services:a").Allows(ScopeRequirement.Api));
        Assert.True(Parse("admin").Allows(ScopeRequirement.Api));
        Assert.True(Parse("api").IsSubsetOf(user));
        Assert.False(Parse("admin").IsSubsetOf(user));
        Assert.False(ScopeSet.TryParse(["services:Bad_Name"], out _, out _));
    }

    [Fact]
    public void TheTokenCacheStaysWithinItsSizeAndForgetsNegativesAfterTheirAge()
    {
        var cache = new TokenCache(Options.Create(new TokenOptions { CacheSize = 100, NegativeCacheAge = TimeSpan.FromSeconds(30) }));
        var format = new TokenFormat("pc");
        for (var i = 0; i < 1000; i++)
            cache.Store(TokenFormat.Digest(format.Generate(TokenKind.Personal)), CachedToken.Unknown(0), cache.Generation);
        Assert.InRange(cache.Count, 1, 100);

        var digest = TokenFormat.Digest("pcp_whatever");
        cache.Store(digest, CachedToken.Unknown(0), cache.Generation);
        Assert.True(cache.TryGet(digest, TimeSpan.FromSeconds(29).Ticks, out _));
        Assert.False(cache.TryGet(digest, TimeSpan.FromSeconds(30).Ticks, out _));
    }

    [Fact]
    public void AStoreThatRacesAnInvalidationIsDropped()
    {
        var cache = new TokenCache(Options.Create(new TokenOptions()));
        var digest = TokenFormat.Digest("pcp_raced");
        var generation = cache.Generation;    // a reader starts loading from the database...
        cache.Invalidate(digest);             // ...a revocation lands meanwhile...
        cache.Store(digest, new CachedToken { TokenId = 1 }, generation); // ...and the stale row must not be cached
        Assert.False(cache.TryGet(digest, 0, out _));
    }
}

/// <summary>Data/BoundedCache.cs: the primitive under the token, session and client caches.</summary>
public sealed class BoundedCacheTests
{
    private sealed record Value(int N);

    [Fact]
    public void AReadOvertakenByAnInvalidationIsNotKept()
    {
        var cache = new Portcullis.Data.BoundedCache<string, Value>(100, 100);
        var generation = cache.Generation; // the loader starts reading...
        cache.Invalidate("k");              // ...a revocation lands...
        cache.Store("k", new Value(1), generation); // ...and the stale read comes back
        Assert.False(cache.TryGet("k", out _));
        cache.Store("k", new Value(2), cache.Generation);
        Assert.True(cache.TryGet("k", out var fresh));
        Assert.Equal(2, fresh.N);
    }

    [Fact]
    public async Task NoInterleavingOfStoreAndInvalidateLeavesAStaleEntry()
    {
        var cache = new Portcullis.Data.BoundedCache<int, Value>(1_000, 1_000);
        for (var i = 0; i < 20_000; i++)
        {
            var key = i % 50;
            var generation = cache.Generation;
            var spin = i % 7;
            // The store and the invalidation race on two threads; the read happened before the invalidation.
            var store = Task.Run(() =>
            {
                Thread.SpinWait(spin);
                cache.Store(key, new Value(i), generation);
            });
            var invalidate = Task.Run(() => cache.Invalidate(key));
            await Task.WhenAll(store, invalidate);
            Assert.False(cache.TryGet(key, out _), $"iteration {i}: a read from before the invalidation stayed in the cache");
        }
    }

    [Fact]
    public void AFloodOfUnknownKeysCannotEvictKnownEntries()
    {
        var cache = new Portcullis.Data.BoundedCache<string, Value>(100, 100);
        for (var i = 0; i < 100; i++)
            cache.Store("good-" + i, new Value(i), cache.Generation);
        for (var i = 0; i < 100_000; i++)
            cache.Store("garbage-" + i, new Value(-1), cache.Generation, negative: true);
        for (var i = 0; i < 100; i++)
            Assert.True(cache.TryGet("good-" + i, out _), $"good-{i} was evicted by garbage");
        Assert.True(cache.Count <= 200, $"the cache holds {cache.Count} entries");
    }
}

/// <summary>docs/gitleaks.toml, applied as gitleaks applies a rule: the secret is the whole match unless the pattern has capture groups.</summary>
public sealed class GitleaksRuleTests
{
    [Fact]
    public void TheRuleFindsEveryKindOfTokenAndItsSecretIsTheWholeToken()
    {
        var toml = File.ReadAllText(Path.Combine(ClusterTests.RepositoryRoot(), "docs", "gitleaks.toml"));
        var pattern = System.Text.RegularExpressions.Regex.Match(toml, "^regex = '''(.*)'''$", System.Text.RegularExpressions.RegexOptions.Multiline).Groups[1].Value;
        var rule = new System.Text.RegularExpressions.Regex(pattern);
        // gitleaks 8.18.1+: with no secretGroup set, a pattern with exactly one capture group reports that group as the
        // secret, and --redact hides only it. Group 0 (the whole match) must be the only one.
        Assert.Equal([0], rule.GetGroupNumbers());
        var format = new TokenFormat("pc");
        foreach (var kind in new[] { TokenKind.Personal, TokenKind.Service, TokenKind.ClientSecret })
        {
            var token = format.Generate(kind);
            var line = $"export PORTCULLIS_TOKEN=\"{token}\" # in a script";
            var match = rule.Match(line);
            Assert.True(match.Success, $"the rule misses a {kind} token");
            Assert.Equal(token, match.Value);
            // What gitleaks --redact writes: the match with its secret (the lone capture group, else the whole match) replaced.
            var secret = rule.GetGroupNumbers().Length == 2 ? match.Groups[1].Value : match.Value;
            Assert.DoesNotContain(token[4..], match.Value.Replace(secret, "REDACTED"));
        }
        Assert.False(rule.IsMatch("pcp_" + new string('a', 35)), "a token too short is not one");
    }
}
