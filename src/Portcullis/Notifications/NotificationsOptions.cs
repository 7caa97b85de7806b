using Microsoft.Extensions.Options;

namespace Portcullis.Notifications;

/// <summary>Configuration section <c>Notifications</c>: webhooks for everyone's token events, and how deliveries are retried (docs/notifications.md).</summary>
internal sealed class NotificationsOptions
{
    public const string Section = "Notifications";

    /// <summary>Webhooks an admin configured: they hear the events they name about every token.</summary>
    public List<WebhookConfig> Webhooks { get; set; } = [];

    /// <summary>How long a delivery is retried before it is given up.</summary>
    public TimeSpan RetryFor { get; set; } = TimeSpan.FromDays(1);

    /// <summary>The wait after the first failed attempt; it doubles after each one, up to <see cref="MaxRetryDelay"/>.</summary>
    public TimeSpan FirstRetryDelay { get; set; } = TimeSpan.FromSeconds(30);

    public TimeSpan MaxRetryDelay { get; set; } = TimeSpan.FromHours(1);

    /// <summary>How often an instance looks for events to fan out and deliveries that are due.</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>How often tokens are checked for their end (the expiring and expired notices).</summary>
    public TimeSpan ExpiryScanInterval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>How long one attempt may take, connection included.</summary>
    public TimeSpan AttemptTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Whether people's own webhooks may point at this machine (loopback) or at link-local addresses (cloud metadata).
    /// Off by default: a webhook URL must not turn Portcullis into a way into what only it can reach.
    /// </summary>
    public bool AllowLocalTargets { get; set; }
}

internal sealed class WebhookConfig
{
    public string? Url { get; set; }
    public string? Secret { get; set; }
    public List<string> Events { get; set; } = [];
}

internal sealed class NotificationsOptionsValidator : IValidateOptions<NotificationsOptions>
{
    public ValidateOptionsResult Validate(string? name, NotificationsOptions o)
    {
        var errors = new List<string>();
        for (var i = 0; i < o.Webhooks.Count; i++)
        {
            var w = o.Webhooks[i];
            if (WebhookRules.CheckUrl(w.Url) is { } urlError)
                errors.Add($"Notifications:Webhooks:{i}:Url: {urlError}");
            if (w.Secret is not { Length: >= 16 })
                errors.Add($"Notifications:Webhooks:{i}:Secret must be at least 16 characters (it signs the deliveries; e.g. openssl rand -hex 32).");
            if (WebhookRules.CheckEvents(w.Events) is { } eventError)
                errors.Add($"Notifications:Webhooks:{i}:Events: {eventError}");
        }
        if (o.RetryFor < TimeSpan.FromSeconds(1) || o.RetryFor > TimeSpan.FromDays(7))
            errors.Add("Notifications:RetryFor must be between 00:00:01 and 7.00:00:00.");
        if (o.FirstRetryDelay < TimeSpan.FromMilliseconds(100) || o.FirstRetryDelay > o.MaxRetryDelay)
            errors.Add("Notifications:FirstRetryDelay must be at least 00:00:00.1 and at most Notifications:MaxRetryDelay.");
        if (o.PollInterval < TimeSpan.FromMilliseconds(50) || o.PollInterval > TimeSpan.FromMinutes(1))
            errors.Add("Notifications:PollInterval must be between 00:00:00.05 and 00:01:00.");
        if (o.ExpiryScanInterval < TimeSpan.FromMilliseconds(100) || o.ExpiryScanInterval > TimeSpan.FromHours(1))
            errors.Add("Notifications:ExpiryScanInterval must be between 00:00:00.1 and 01:00:00.");
        if (o.AttemptTimeout < TimeSpan.FromSeconds(1) || o.AttemptTimeout > TimeSpan.FromMinutes(1))
            errors.Add("Notifications:AttemptTimeout must be between 00:00:01 and 00:01:00.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
