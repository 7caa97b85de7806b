using System.Net;
using System.Net.Sockets;

namespace Portcullis.Notifications;

/// <summary>A person's own webhook: events about their own tokens.</summary>
internal sealed class Webhook
{
    public long Id { get; set; }
    public long OwnerId { get; init; }
    public required string Url { get; init; }

    /// <summary>The event names, space-separated.</summary>
    public required string Events { get; init; }

    /// <summary>The signing secret, sealed with the key-encryption key (it must be read to sign).</summary>
    public required string SealedSecret { get; set; }
    public required string SecretHint { get; init; }
    public DateTime CreatedAt { get; init; }
}

/// <summary>One event on its way to one webhook.</summary>
internal sealed class WebhookDelivery
{
    public const string Pending = "pending";
    public const string Delivered = "delivered";
    public const string Failed = "failed";

    public long Id { get; set; }
    public required string DeliveryId { get; init; }

    /// <summary>The person's webhook, or null for one of the configuration.</summary>
    public long? WebhookId { get; init; }

    /// <summary>Whose webhook (null for the configuration's): who may see the delivery.</summary>
    public long? OwnerId { get; init; }
    public required string Url { get; init; }
    public required string Event { get; init; }
    public required string Payload { get; init; }
    public required string Status { get; set; }
    public int Attempts { get; set; }
    public DateTime CreatedAt { get; init; }
    public DateTime NextAttemptAt { get; set; }
    public DateTime? LockedUntil { get; set; }
    public DateTime? DeliveredAt { get; set; }
    public int? LastStatus { get; set; }
    public string? LastError { get; set; }
}

/// <summary>A notice sent about a token's end, kept so that it is sent once.</summary>
internal sealed class TokenNotice
{
    public long TokenId { get; init; }
    public required string Notice { get; init; }
}

/// <summary>The events a webhook can hear (docs/notifications.md).</summary>
internal static class WebhookEvents
{
    public const string Expiring = "token.expiring";
    public const string Expired = "token.expired";
    public const string Revoked = "token.revoked";
    public const string UsedAfterRevoke = "token.used_after_revoke";
    public const string Leaked = "token.leaked";
    public const string DeniedSource = "token.denied_source";

    public static readonly string[] All = [Expiring, Expired, Revoked, UsedAfterRevoke, Leaked, DeniedSource];

    public static bool IsNotified(string name) => Array.IndexOf(All, name) >= 0;
}

internal static class WebhookRules
{
    public static string? CheckUrl(string? url)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttps && uri.Scheme != Uri.UriSchemeHttp))
            return "Give an absolute http:// or https:// URL.";
        if (!string.IsNullOrEmpty(uri.UserInfo))
            return "Put no user name or password in the URL: deliveries are signed instead.";
        return url!.Length > 2000 ? "The URL is longer than 2000 characters." : null;
    }

    public static string? CheckEvents(IReadOnlyCollection<string>? events)
    {
        if (events is not { Count: > 0 })
            return $"Name at least one event: {string.Join(", ", WebhookEvents.All)}.";
        return events.FirstOrDefault(e => !WebhookEvents.IsNotified(e)) is { } unknown
            ? $"'{unknown}' is not an event a webhook can hear. Choose from: {string.Join(", ", WebhookEvents.All)}."
            : null;
    }

    /// <summary>This machine (loopback, unspecified) or link-local (where clouds answer with their metadata).</summary>
    public static bool IsLocal(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
            address = address.MapToIPv4();
        if (IPAddress.IsLoopback(address) || address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any) || address.IsIPv6LinkLocal)
            return true;
        return address.AddressFamily == AddressFamily.InterNetwork && address.GetAddressBytes() is [169, 254, ..];
    }
}
