using Portcullis.Auth;
using Portcullis.Security;
using Portcullis.Tokens;

namespace Portcullis.Data;

/// <summary>
/// Tells every cache that something changed: on this instance at once and, with PostgreSQL, on
/// every other instance through <c>LISTEN/NOTIFY</c>. Call it after the change is committed.
/// </summary>
internal sealed class InvalidationBus(TokenCache tokens, PrincipalCache principals)
{
    public const string Channel = "portcullis_invalidate";

    /// <summary>Set when PostgreSQL carries notifications to other instances.</summary>
    public Func<string, CancellationToken, Task>? Publisher { get; set; }

    public Task TokenChangedAsync(string tokenHashHex, CancellationToken cancellationToken = default) =>
        PublishAsync("t:" + tokenHashHex, cancellationToken);

    public Task PrincipalChangedAsync(long principalId, CancellationToken cancellationToken = default) =>
        PublishAsync("p:" + principalId, cancellationToken);

    private async Task PublishAsync(string message, CancellationToken cancellationToken)
    {
        Apply(message);
        if (Publisher is { } publish)
            await publish(message, cancellationToken);
    }

    /// <summary>Applies one message, local or from another instance. Unknown messages clear everything (fail safe).</summary>
    public void Apply(string message)
    {
        if (message.StartsWith("t:", StringComparison.Ordinal) && message.Length == 66)
        {
            tokens.Invalidate(TokenDigest.FromHex(message[2..]));
            return;
        }
        if (message.StartsWith("p:", StringComparison.Ordinal) && long.TryParse(message.AsSpan(2), out var id))
        {
            principals.Invalidate(id);
            return;
        }
        ClearAll();
    }

    /// <summary>Drops every cached decision, e.g. after the notification connection was lost for a while.</summary>
    public void ClearAll()
    {
        tokens.Clear();
        principals.Clear();
    }
}
