using Microsoft.Extensions.Options;

namespace Portcullis.Data;

/// <summary>Configuration section <c>Testing</c>: hooks for the end-to-end tests, off unless set.</summary>
internal sealed class TestingOptions
{
    public const string Section = "Testing";

    /// <summary>
    /// How long one cache holds what it read from the database before storing it. Widens the window in which an
    /// invalidation can overtake a read, so the tests can land a revocation there (docs/configuration.md).
    /// </summary>
    public TimeSpan CacheStoreDelay { get; set; }

    /// <summary>Which caches are held, comma-separated: <c>tokens</c>, <c>sessions</c>, <c>clients</c>, <c>principals</c>; all when unset.</summary>
    public string? CacheStoreDelayFor { get; set; }
}

/// <summary>
/// The testing hook between a credential cache's database read and its <see cref="BoundedCache{TKey, TValue}.Store"/>.
/// Free when unset (a comparison); when set it logs that it holds a read, so a test knows the window is open.
/// </summary>
internal sealed class CacheStoreDelay(IOptions<TestingOptions> options, ILogger<CacheStoreDelay> logger)
{
    public const string Tokens = "tokens";
    public const string Sessions = "sessions";
    public const string Clients = "clients";
    public const string Principals = "principals";

    /// <summary>No hook: for caches built outside the container (benchmarks, unit tests).</summary>
    public static readonly CacheStoreDelay Off = new(Options.Create(new TestingOptions()), Microsoft.Extensions.Logging.Abstractions.NullLogger<CacheStoreDelay>.Instance);

    private readonly TimeSpan _delay = options.Value.CacheStoreDelay;
    private readonly string[]? _caches = options.Value.CacheStoreDelayFor?.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);

    public ValueTask BeforeStoreAsync(string cache, CancellationToken cancellationToken) =>
        _delay > TimeSpan.Zero && (_caches is null || _caches.Contains(cache)) ? new(HoldAsync(cache, cancellationToken)) : ValueTask.CompletedTask;

    private async Task HoldAsync(string cache, CancellationToken cancellationToken)
    {
        logger.LogWarning("Testing:CacheStoreDelay holds a {Cache} read for {Delay} before storing it", cache, _delay);
        await Task.Delay(_delay, cancellationToken);
    }
}
