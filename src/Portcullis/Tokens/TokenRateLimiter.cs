using System.Globalization;
using System.Threading.RateLimiting;

namespace Portcullis.Tokens;

/// <summary>Which of a token's rate limits refused a request, and when to try again.</summary>
internal sealed record RateLimitRefusal(TokenRateLimit Limits, bool PerSecond, int RetryAfterSeconds)
{
    /// <summary><c>RateLimit-Policy</c> (draft-ietf-httpapi-ratelimit-headers): every limit the token has.</summary>
    public string PolicyHeader => string.Join(", ", new[]
    {
        Limits.PerSecond is { } s ? Policy(TokenRateLimiter.PerSecondPolicy, s, 1) : null,
        Limits.PerMinute is { } m ? Policy(TokenRateLimiter.PerMinutePolicy, m, 60) : null,
    }.OfType<string>());

    /// <summary><c>RateLimit</c>: the limit that refused, with nothing left until it refills.</summary>
    public string StateHeader => FormattableString.Invariant($"\"{Name}\";r=0;t={RetryAfterSeconds}");

    public string Description => FormattableString.Invariant(
        $"This token allows {(PerSecond ? Limits.PerSecond : Limits.PerMinute)} requests per {(PerSecond ? "second" : "minute")}. Try again in {RetryAfterSeconds} s.");

    private string Name => PerSecond ? TokenRateLimiter.PerSecondPolicy : TokenRateLimiter.PerMinutePolicy;

    private static string Policy(string name, long quota, int window) => FormattableString.Invariant($"\"{name}\";q={quota};w={window}");
}

/// <summary>
/// Per-token rate limits (docs/token-policies.md, "Rate limit"): a token bucket per token and limit, held by this
/// instance (<see cref="System.Threading.RateLimiting"/>'s partitioned limiter, which also forgets full buckets of
/// idle tokens), keyed by <see cref="CachedToken.RateBucket"/> so that a rotation's successor and its predecessor in its
/// grace period share them. Every instance counts on its own: behind k instances a token gets at most k times its limit.
/// </summary>
internal sealed class TokenRateLimiter : IDisposable
{
    public const string PerSecondPolicy = "per-second";
    public const string PerMinutePolicy = "per-minute";

    private readonly PartitionedRateLimiter<CachedToken> _perSecond =
        PartitionedRateLimiter.Create<CachedToken, long>(t => Partition(t.RateBucket, t.RateLimit?.PerSecond, TimeSpan.FromSeconds(1)));

    private readonly PartitionedRateLimiter<CachedToken> _perMinute =
        PartitionedRateLimiter.Create<CachedToken, long>(t => Partition(t.RateBucket, t.RateLimit?.PerMinute, TimeSpan.FromMinutes(1)));

    /// <summary>Takes one request from the token's buckets; null when it may go ahead, else which limit refused.</summary>
    public RateLimitRefusal? TryAcquire(CachedToken token)
    {
        var limits = token.RateLimit!;
        RateLimitLease? minute = null;
        try
        {
            // A spent minute is the longer wait, so it is the one to name; and it is looked at first so that a request
            // the second's bucket refuses does not also use up the minute's.
            if (limits.PerMinute is not null && _perMinute.GetStatistics(token) is { CurrentAvailablePermits: <= 0 })
            {
                minute = _perMinute.AttemptAcquire(token);
                if (!minute.IsAcquired)
                    return Refusal(limits, minute, perSecond: false);
            }
            using var second = _perSecond.AttemptAcquire(token);
            if (!second.IsAcquired)
                return Refusal(limits, second, perSecond: true);
            minute ??= _perMinute.AttemptAcquire(token);
            return minute.IsAcquired ? null : Refusal(limits, minute, perSecond: false);
        }
        finally
        {
            minute?.Dispose();
        }
    }

    /// <summary>
    /// The refusal, with the wait the failed lease gives: the limiter says a whole window, by the end of which the bucket
    /// has been refilled, whatever part of the window has passed.
    /// </summary>
    private static RateLimitRefusal Refusal(TokenRateLimit limits, RateLimitLease lease, bool perSecond)
    {
        var window = perSecond ? TimeSpan.FromSeconds(1) : TimeSpan.FromMinutes(1);
        var after = lease.TryGetMetadata(MetadataName.RetryAfter, out var given) ? given : window;
        return new RateLimitRefusal(limits, perSecond, (int)Math.Clamp(Math.Ceiling(after.TotalSeconds), 1, window.TotalSeconds));
    }

    /// <summary>A bucket of <paramref name="limit"/> requests, refilled to the full limit once every <paramref name="window"/>.</summary>
    private static RateLimitPartition<long> Partition(long tokenId, long? limit, TimeSpan window) => limit is { } n
        ? RateLimitPartition.GetTokenBucketLimiter(tokenId, _ => new TokenBucketRateLimiterOptions
        {
            TokenLimit = (int)n,
            TokensPerPeriod = (int)n,
            ReplenishmentPeriod = window,
            QueueLimit = 0,
        })
        : RateLimitPartition.GetNoLimiter(0L);

    public void Dispose()
    {
        _perSecond.Dispose();
        _perMinute.Dispose();
    }
}
