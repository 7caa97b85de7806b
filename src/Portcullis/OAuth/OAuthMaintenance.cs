using Microsoft.Extensions.Options;
using Portcullis.Hosting;
using Portcullis.Tokens;
using Portcullis.Auth;

namespace Portcullis.OAuth;

/// <summary>
/// Housekeeping behind the JWT deny-list and the signing keys, every <c>Tokens:CacheMaxAge</c>:
/// drops deny-list entries whose JWTs have expired, prunes retired keys that can no longer verify
/// anything, and re-reads both as a safety net in case a notification from another instance was lost;
/// forgets device logins that ended long ago (<see cref="DeviceGrant.PruneAsync"/>) and traded subject tokens that have expired.
/// </summary>
internal sealed class OAuthMaintenance(RevokedJwts revokedJwts, SigningKeys keys, DeviceGrant devices, Federation.TokenExchangeGrant exchanges,
    IOptions<TokenOptions> options, ILogger<OAuthMaintenance> logger)
    : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.CacheMaxAge);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                try
                {
                    await revokedJwts.PruneAsync(stoppingToken);
                    await revokedJwts.ReloadAsync(stoppingToken);
                    await keys.PruneAsync(stoppingToken);
                    await keys.ReloadAsync(stoppingToken);
                    await devices.PruneAsync(stoppingToken);
                    await exchanges.PruneAsync(stoppingToken);
                }
                catch (Exception e) when (e is not OperationCanceledException && Data.DatabaseFailures.IsDatabaseFailure(e))
                {
                    logger.LogWarning("OAuth housekeeping failed; will retry: {Error}", e.Message);
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }
}
