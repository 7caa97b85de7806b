using System.CommandLine;
using System.Globalization;
using static Portcullis.Cli.CommandSupport;

namespace Portcullis.Cli;

/// <summary><c>webhook</c>: your webhooks for events about your tokens, and their deliveries (docs/notifications.md).</summary>
internal static class WebhookCommands
{
    public static IEnumerable<Command> All()
    {
        yield return Webhook();
    }

    private static Command Webhook()
    {
        var command = new Command("webhook", "Webhooks for events about your tokens.\n\nExamples:\n  portcullis webhook add https://alerts.example.com/hook --event token.leaked\n  portcullis webhook deliveries");
        var url = new Argument<string>("URL");
        var events = new Option<string[]>("--event")
        {
            Description = "token.expiring, token.expired, token.revoked, token.used_after_revoke, token.leaked or token.denied_source; repeat for several. Default: all of them.",
            AllowMultipleArgumentsPerToken = false,
        };
        var add = new Command("add", "Add a webhook; prints its signing secret once.\n\nExample:\n  portcullis webhook add https://alerts.example.com/hook --event token.expiring --event token.leaked") { url, events };
        add.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var chosen = parse.GetValue(events) is { Length: > 0 } e ? e : Notifications.WebhookEvents.All;
            var created = await target.Client().CreateWebhookAsync(new CreateWebhookRequest(parse.GetValue(url), chosen), cancellationToken);
            Print(parse, created, () =>
            {
                Console.WriteLine($"Added webhook {created.Id} for {string.Join(", ", created.Events)}.");
                Console.WriteLine($"Signing secret (shown only this once): {created.Secret}");
            });
        }));
        var list = new Command("list", "List your webhooks.\n\nExample:\n  portcullis webhook list");
        list.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var webhooks = await target.Client().ListWebhooksAsync(cancellationToken);
            Print(parse, webhooks, () => Table(["ID", "URL", "EVENTS", "SECRET"],
                webhooks.Select(w => new[] { w.Id.ToString(CultureInfo.InvariantCulture), w.Url, string.Join(' ', w.Events), w.SecretHint })));
        }));
        var id = new Argument<long>("ID");
        var remove = new Command("remove", "Remove a webhook.\n\nExample:\n  portcullis webhook remove 3") { id };
        remove.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            await target.Client().DeleteWebhookAsync(parse.GetValue(id), cancellationToken);
            Print(parse, new { id = parse.GetValue(id), removed = true }, () => Console.WriteLine($"Removed webhook {parse.GetValue(id)}."));
        }));
        var all = new Option<bool>("--all") { Description = "Every delivery, the configuration's webhooks included (admin)." };
        var deliveries = new Command("deliveries", "The latest deliveries and their status.\n\nExample:\n  portcullis webhook deliveries --all") { all };
        deliveries.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var log = await target.Client().ListDeliveriesAsync(parse.GetValue(all), cancellationToken);
            Print(parse, log, () => Table(["WHEN", "EVENT", "TO", "STATUS", "ATTEMPTS", "LAST ANSWER"],
                log.Select(d => new[] { Date(d.CreatedAt), d.Event, d.Target, d.Status, d.Attempts.ToString(CultureInfo.InvariantCulture),
                    d.LastError ?? d.LastStatus?.ToString(CultureInfo.InvariantCulture) ?? "" })));
        }));
        command.Subcommands.Add(add);
        command.Subcommands.Add(list);
        command.Subcommands.Add(remove);
        command.Subcommands.Add(deliveries);
        return command;
    }
}
