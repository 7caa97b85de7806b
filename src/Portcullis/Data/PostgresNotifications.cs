using Microsoft.Extensions.Options;
using Npgsql;
using Portcullis.Hosting;

namespace Portcullis.Data;

/// <summary>Publishes this instance's invalidations to the others with <c>pg_notify</c>.</summary>
internal sealed class PostgresPublisher(IOptions<DatabaseOptions> options, ILogger<PostgresPublisher> logger) : IInvalidationPublisher, IDisposable
{
    /// <summary>Shared with the listener (<see cref="PostgresNotifications"/>).</summary>
    public NpgsqlDataSource DataSource { get; } = NpgsqlDataSource.Create(options.Value.ConnectionString!);

    public async Task PublishAsync(string message, CancellationToken cancellationToken)
    {
        try
        {
            await using var cmd = DataSource.CreateCommand("SELECT pg_notify(@channel, @message)");
            cmd.Parameters.AddWithValue("channel", InvalidationBus.Channel);
            cmd.Parameters.AddWithValue("message", message);
            await cmd.ExecuteNonQueryAsync(cancellationToken);
        }
        catch (Exception e) when (e is NpgsqlException or TimeoutException)
        {
            // The change is committed; other instances will drop their caches when their own
            // listening connection notices the outage, or re-read after Tokens:CacheMaxAge.
            logger.LogError("Could not notify other instances of a change: {Error}", e.Message);
        }
    }

    public void Dispose() => DataSource.Dispose();
}

/// <summary>
/// Carries cache invalidations between instances that share one PostgreSQL database: changes are
/// published with <c>pg_notify</c> (<see cref="PostgresPublisher"/>) and every instance <c>LISTEN</c>s here.
/// When the listening connection is lost, every cached decision is dropped (notifications may have been
/// missed) and the connection is re-established by itself.
/// </summary>
internal sealed class PostgresNotifications(PostgresPublisher publisher, InvalidationBus bus, ILogger<PostgresNotifications> logger) : BackgroundService
{
    private readonly NpgsqlDataSource _dataSource = publisher.DataSource;
    private readonly InvalidationBus _bus = bus;
    private readonly ILogger<PostgresNotifications> _logger = logger;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var connected = false;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await using var connection = await _dataSource.OpenConnectionAsync(stoppingToken);
                connection.Notification += (_, e) => _bus.Apply(e.Payload);
                await using (var listen = new NpgsqlCommand($"LISTEN {InvalidationBus.Channel}", connection))
                    await listen.ExecuteNonQueryAsync(stoppingToken);
                if (connected)
                    _logger.LogInformation("Listening for cache invalidations again");
                // Anything published while we were not listening is lost: start from an empty cache.
                _bus.ClearAll();
                connected = true;
                while (!stoppingToken.IsCancellationRequested)
                {
                    if (!await connection.WaitAsync(TimeSpan.FromSeconds(5), stoppingToken))
                    {
                        await using var ping = new NpgsqlCommand("SELECT 1", connection);
                        await ping.ExecuteNonQueryAsync(stoppingToken);
                    }
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                _bus.ClearAll();
                _logger.LogWarning("Lost the PostgreSQL notification connection ({Error}); reconnecting", e.Message);
                try
                {
                    await Task.Delay(TimeSpan.FromSeconds(1), stoppingToken);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }
}
