using System.Globalization;
using Portcullis.Auth;
using Portcullis.OAuth;
using Portcullis.Security;
using Portcullis.Tokens;

namespace Portcullis.Data;

/// <summary>
/// Tells every cache that something changed: on this instance at once and, with PostgreSQL, on
/// every other instance through <c>LISTEN/NOTIFY</c>. Call it after the change is committed.
/// </summary>
internal sealed class InvalidationBus(TokenCache tokens, PrincipalCache principals, ClientCache clients, RevokedJwts revokedJwts, SigningKeys keys,
    Gateway.ServiceRegistry services, SessionStore sessions, IEnumerable<IInvalidationPublisher> publishers)
{
    public const string Channel = "portcullis_invalidate";

    /// <summary>How other instances hear of a change: PostgreSQL's <c>NOTIFY</c>, or nobody (one SQLite instance).</summary>
    private readonly IInvalidationPublisher? _publisher = publishers.SingleOrDefault();

    public Task TokenChangedAsync(string tokenHashHex, CancellationToken cancellationToken = default) =>
        PublishAsync("t:" + tokenHashHex, cancellationToken);

    /// <summary>A new token: every instance adds it to the set of existing tokens (<see cref="TokenCache.MayExist"/>).</summary>
    public Task TokenCreatedAsync(string tokenHashHex, CancellationToken cancellationToken = default) =>
        PublishAsync("n:" + tokenHashHex, cancellationToken);

    public Task PrincipalChangedAsync(long principalId, CancellationToken cancellationToken = default) =>
        PublishAsync("p:" + principalId, cancellationToken);

    public Task ClientChangedAsync(string clientId, CancellationToken cancellationToken = default) =>
        PublishAsync("c:" + clientId, cancellationToken);

    /// <summary>A JWT was put on the deny-list; the message carries its expiry so nobody needs to read it back.</summary>
    public Task JwtRevokedAsync(string jti, DateTime expiresAt, CancellationToken cancellationToken = default) =>
        PublishAsync($"j:{new DateTimeOffset(expiresAt, TimeSpan.Zero).ToUnixTimeSeconds().ToString(CultureInfo.InvariantCulture)}:{jti}", cancellationToken);

    /// <summary>The signing keys changed (a rotation); every instance re-reads them.</summary>
    public Task SigningKeysChangedAsync(CancellationToken cancellationToken = default) => PublishAsync("k", cancellationToken);

    /// <summary>A web session ended (logout).</summary>
    public Task SessionEndedAsync(string idHashHex, CancellationToken cancellationToken = default) => PublishAsync("x:" + idHashHex, cancellationToken);

    /// <summary>A service was registered or removed through the API; every instance re-reads the registry.</summary>
    public Task ServicesChangedAsync(CancellationToken cancellationToken = default) => PublishAsync("s", cancellationToken);

    private async Task PublishAsync(string message, CancellationToken cancellationToken)
    {
        Apply(message);
        if (_publisher is not null)
            await _publisher.PublishAsync(message, cancellationToken);
    }

    /// <summary>Applies one message, local or from another instance. Unknown messages clear everything (fail safe).</summary>
    public void Apply(string message)
    {
        if (message.StartsWith("t:", StringComparison.Ordinal) && message.Length == 66)
        {
            tokens.Invalidate(TokenDigest.FromHex(message[2..]));
            return;
        }
        if (message.StartsWith("n:", StringComparison.Ordinal) && message.Length == 66)
        {
            tokens.Created(TokenDigest.FromHex(message[2..]));
            return;
        }
        if (message.StartsWith("p:", StringComparison.Ordinal) && long.TryParse(message.AsSpan(2), out var id))
        {
            principals.Invalidate(id);
            return;
        }
        if (message.StartsWith("c:", StringComparison.Ordinal))
        {
            clients.Invalidate(message[2..]);
            return;
        }
        if (message.StartsWith("j:", StringComparison.Ordinal) && message.IndexOf(':', 2) is var colon and > 2
            && long.TryParse(message.AsSpan(2, colon - 2), NumberStyles.None, CultureInfo.InvariantCulture, out var exp))
        {
            revokedJwts.Add(message[(colon + 1)..], DateTimeOffset.FromUnixTimeSeconds(exp).UtcDateTime);
            return;
        }
        if (message == "k")
        {
            _ = keys.ReloadAsync(CancellationToken.None);
            return;
        }
        if (message.StartsWith("x:", StringComparison.Ordinal) && message.Length == 66)
        {
            sessions.Invalidate(TokenDigest.FromHex(message[2..]));
            return;
        }
        if (message == "s")
        {
            _ = services.ReloadAsync(CancellationToken.None);
            return;
        }
        ClearAll();
    }

    /// <summary>Drops every cached decision, e.g. after the notification connection was lost for a while.</summary>
    public void ClearAll()
    {
        tokens.Clear();
        principals.Clear();
        clients.Clear();
        sessions.Clear();
        // Revocations and key rotations announced meanwhile may have been missed: read them again.
        _ = revokedJwts.ReloadAsync(CancellationToken.None);
        _ = keys.ReloadAsync(CancellationToken.None);
        _ = services.ReloadAsync(CancellationToken.None);
    }
}

/// <summary>Carries an invalidation to the other instances (<see cref="PostgresPublisher"/>).</summary>
internal interface IInvalidationPublisher
{
    Task PublishAsync(string message, CancellationToken cancellationToken);
}
