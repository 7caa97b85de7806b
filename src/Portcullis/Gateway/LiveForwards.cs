using System.Collections.Concurrent;
using System.Diagnostics;

namespace Portcullis.Gateway;

/// <summary>
/// Forwarded requests still under way, checked again twice a second: a WebSocket or a long download ends
/// within a second of its credential's revocation, its owner's disable or demotion, or a logout, on every
/// instance (other instances' invalidations reach this one's caches, which the check reads). A check that
/// cannot decide because the database does not answer leaves the connection open: nothing was revoked,
/// since a revocation is a database write.
/// </summary>
internal sealed partial class LiveForwards(ILogger<LiveForwards> logger) : BackgroundService
{
    public static readonly TimeSpan CheckEvery = TimeSpan.FromMilliseconds(500);

    private readonly ConcurrentDictionary<long, Live> _live = new();
    private long _next;

    /// <param name="stillAllowed">Whether the request's credential may still reach its service; false ends the request.</param>
    private sealed record Live(HttpContext Http, string Service, Func<CancellationToken, ValueTask<bool>> StillAllowed, long Since);

    public int Count => _live.Count;

    public long Add(HttpContext http, string service, Func<CancellationToken, ValueTask<bool>> stillAllowed)
    {
        var id = Interlocked.Increment(ref _next);
        _live[id] = new Live(http, service, stillAllowed, Stopwatch.GetTimestamp());
        return id;
    }

    public void Remove(long id) => _live.TryRemove(id, out _);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(CheckEvery);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                foreach (var (id, live) in _live)
                {
                    // Requests younger than one period were checked when they started.
                    if (Stopwatch.GetElapsedTime(live.Since) < CheckEvery || await live.StillAllowed(stoppingToken))
                        continue;
                    if (_live.TryRemove(id, out _))
                    {
                        Log.Ended(logger, live.Service);
                        live.Http.Abort();
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "A connection to {Service} was closed: its credential no longer allows it")]
        public static partial void Ended(ILogger logger, string service);
    }
}
