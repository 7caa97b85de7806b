using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Portcullis.Client;
using static Portcullis.Cli.CommandSupport;

namespace Portcullis.Cli;

/// <summary><c>token</c> and its subcommands (docs/cli.md).</summary>
internal static class TokenCommands
{
    /// <summary>How many names <c>portcullis token</c> tries within one second before it gives up on the conflict.</summary>
    private const int MaxNameAttempts = 20;

    public static IEnumerable<Command> All()
    {
        yield return Token();
    }

    private static Command Token()
    {
        var days = new Argument<int?>("DAYS") { Description = "Days until it expires (default: the server's default lifetime, or never).", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("token", "Create a token with scopes 'api services' and print it (Daeploy style); or manage tokens.\n\nExamples:\n  portcullis token 30\n  portcullis token create ci --expires 90d --scope services\n  portcullis token list --all") { days };
        command.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var lifetime = parse.GetValue(days);
            if (lifetime is < 1)
                throw new CliException("DAYS must be a positive number of days.", 2);
            // Named after the second it was made; another run in the same second (a script's loop, two terminals) takes the
            // name with -2, -3, ... rather than failing on the name the first one holds.
            var stamp = "cli-" + DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);
            var client = target.Client();
            CreatedTokenResponse created;
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    created = await client.CreateTokenAsync(new CreateTokenRequest(attempt == 1 ? stamp : $"{stamp}-{attempt}", "Created with portcullis token", lifetime,
                        ExpiresAt: null, ["api", "services"], Owner: null, MaxUses: null, AllowedCidrs: null, RateLimit: null, Deliver: null, LinkExpiresInMinutes: null), cancellationToken);
                    break;
                }
                catch (PortcullisApiException e) when (e.Status == HttpStatusCode.Conflict && attempt < MaxNameAttempts)
                {
                }
            }
            Print(parse, new { host = target.Url, created.Id, created.Name, created.Token, created.ExpiresAt }, () =>
            {
                Console.WriteLine($"Active host: {target.Url}");
                Console.WriteLine("Use it in the header 'Authorization: Bearer <token>'. It is shown only this once:");
                Console.WriteLine(created.Token);
            });
            // On stderr, so that scripts reading the token from stdout are not disturbed.
            if (created.ExpiresAt is null)
            {
                Console.Error.WriteLine("Warning: this token never expires. Whoever copies it can use it until it is revoked; " +
                    $"give it a lifetime next time, e.g. 'portcullis token 30' for 30 days. Revoke it with 'portcullis token revoke {created.Name}'.");
            }
            else if (lifetime is null)
            {
                Console.Error.WriteLine($"It expires on {created.ExpiresAt.Value.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture)} UTC, the server's default lifetime.");
            }
        }));

        var tokenName = new Argument<string>("NAME");
        var description = new Option<string?>("--description") { Description = "What the token is for." };
        var expires = new Option<string?>("--expires") { Description = "30d, a date (2027-01-31) or never." };
        var scope = new Option<string[]>("--scope") { Description = "api, services, services:NAME or admin; repeat for several.", AllowMultipleArgumentsPerToken = false };
        var owner = new Option<string?>("--owner") { Description = "Create it for another user or a service (admins only)." };
        var uses = new Option<long?>("--uses") { Description = "How many requests the token may be used for, ever; then it is spent (e.g. 1 for a bootstrap job)." };
        var allowFrom = new Option<string[]>("--allow-from")
        {
            Description = "A CIDR range (10.0.0.0/8, 2001:db8::/32) or an address the token may be used from; repeat for several. Without it: anywhere.",
            AllowMultipleArgumentsPerToken = false,
        };
        var rate = new Option<string[]>("--rate")
        {
            Description = "How fast it may be used, on each server: 10/s or 600/m; give both for both limits.",
            AllowMultipleArgumentsPerToken = false,
        };
        var link = new Option<bool>("--link") { Description = "Print a one-time link that reveals the token to whoever opens it first, instead of the token." };
        var linkMinutes = new Option<long?>("--link-minutes") { Description = "How long the link works, in minutes (default 60, at most 1440); unopened, the token ends with it." };
        var create = new Command("create", "Create a named token.\n\nExamples:\n  portcullis token create deploy --expires 30d --scope services:model\n  portcullis token create bootstrap --expires 1d --uses 1\n  portcullis token create ci --allow-from 10.0.0.0/8 --allow-from 2001:db8::/32\n  portcullis token create scraper --rate 10/s --rate 300/m\n  portcullis token create ci-deploy --owner ci --link --link-minutes 120")
            { tokenName, description, expires, scope, uses, allowFrom, rate, owner, link, linkMinutes };
        create.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var (days, at) = ParseExpiry(parse.GetValue(expires));
            var scopes = parse.GetValue(scope) is { Length: > 0 } s ? s : null;
            var sources = parse.GetValue(allowFrom) is { Length: > 0 } a ? a : null;
            var created = await target.Client().CreateTokenAsync(
                new CreateTokenRequest(parse.GetValue(tokenName), parse.GetValue(description), days, at, scopes, parse.GetValue(owner), parse.GetValue(uses), sources, ParseRate(parse.GetValue(rate)),
                    parse.GetValue(link) ? "link" : null, parse.GetValue(linkMinutes)), cancellationToken);
            Print(parse, created, () =>
            {
                var limit = created.MaxUses is { } max ? $", works for {max} request{(max == 1 ? "" : "s")}" : "";
                var from = created.AllowedCidrs is { } ranges ? $", only from {string.Join(", ", ranges)}" : "";
                var pace = created.RateLimit is { } r ? $", at most {Rate(r)}" : "";
                var what = $"Created token {created.Name} (id {created.Id}) for {created.Owner}, expires {(created.ExpiresAt is { } e ? Date(e) : "never")}{limit}{from}{pace}.";
                if (created.ClaimUrl is { } url)
                {
                    Console.WriteLine($"{what} Hand over this link: it shows the token once, to whoever opens it first, until {Date(created.LinkExpiresAt)}:");
                    Console.WriteLine(url);
                    return;
                }
                Console.WriteLine($"{what} It is shown only this once:");
                Console.WriteLine(created.Token);
            });
        }));

        var all = new Option<bool>("--all") { Description = "Everyone's tokens (admin)." };
        var list = new Command("list", "List your tokens (never their secrets).\n\nExample:\n  portcullis token list --json") { all };
        list.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var tokens = await target.Client().ListTokensAsync(parse.GetValue(all), cancellationToken: cancellationToken);
            Print(parse, tokens, () => Table(["ID", "NAME", "TOKEN", "SCOPES", "EXPIRES", "LAST USED", "STATUS", "OWNER"],
                tokens.Select(t => new[] { t.Id.ToString(CultureInfo.InvariantCulture), t.Name, t.TokenHint, string.Join(' ', t.Scopes), Date(t.ExpiresAt), Date(t.LastUsedAt), t.Status, t.Owner ?? "" })));
        }));

        var idOrName = new Argument<string>("ID|NAME");
        var show = new Command("show", "Show one token.\n\nExample:\n  portcullis token show deploy") { idOrName };
        show.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var client = target.Client();
            var token = await client.GetTokenAsync(await FindTokenAsync(client, parse.GetValue(idOrName)!, cancellationToken), cancellationToken);
            Print(parse, token, () => Table(["FIELD", "VALUE"], [
                ["id", token.Id.ToString(CultureInfo.InvariantCulture)], ["name", token.Name], ["description", token.Description ?? ""], ["token", token.TokenHint],
                ["scopes", string.Join(' ', token.Scopes)], ["created", Date(token.CreatedAt)], ["expires", Date(token.ExpiresAt)],
                ["last used", token.LastUsedAt is null ? "never" : $"{Date(token.LastUsedAt)} from {token.LastUsedIp}"],
                ["use limit", token.MaxUses is { } max ? $"{token.Uses} of {max} used" : "none"],
                ["allowed from", token.AllowedCidrs is { } ranges ? string.Join(' ', ranges) : "anywhere"],
                ["rate limit", token.RateLimit is { } r ? Rate(r) : "none"], ["status", token.Status]]));
        }));

        var revoke = new Command("revoke", "Revoke a token: it stops working at once.\n\nExample:\n  portcullis token revoke deploy") { idOrName };
        revoke.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var client = target.Client();
            var id = await FindTokenAsync(client, parse.GetValue(idOrName)!, cancellationToken);
            await client.RevokeTokenAsync(id, cancellationToken);
            Print(parse, new { id, revoked = true }, () => Console.WriteLine($"Revoked token {id}."));
        }));

        var grace = new Option<int>("--grace-seconds") { Description = "Keep the old token working this long (default 0)." };
        var rotate = new Command("rotate", "Replace a token's secret, keeping its settings; prints the new token.\n\nExample:\n  portcullis token rotate deploy --grace-seconds 300") { idOrName, grace };
        rotate.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var client = target.Client();
            var created = await client.RotateTokenAsync(await FindTokenAsync(client, parse.GetValue(idOrName)!, cancellationToken), parse.GetValue(grace), cancellationToken);
            Print(parse, created, () =>
            {
                Console.WriteLine($"New secret for {created.Name} (id {created.Id}). It is shown only this once:");
                Console.WriteLine(created.Token);
            });
        }));

        var keep = new Option<string[]>("--scope") { Description = "Narrow to these scopes instead of to what it used; repeat for several.", AllowMultipleArgumentsPerToken = false };
        var dryRun = new Option<bool>("--dry-run") { Description = "Only show what it used and what it would keep." };
        var narrow = new Command("narrow", "Show what a token used in the last 30 days, and narrow it to that (never wider).\n\nExamples:\n  portcullis token narrow deploy --dry-run\n  portcullis token narrow deploy")
            { idOrName, keep, dryRun };
        narrow.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var client = target.Client();
            var id = await FindTokenAsync(client, parse.GetValue(idOrName)!, cancellationToken);
            var suggestion = await client.GetSuggestedScopesAsync(id, cancellationToken);
            var chosen = parse.GetValue(keep) is { Length: > 0 } k ? k : null;
            if (parse.GetValue(dryRun) || (chosen is null && !suggestion.Narrower))
            {
                Print(parse, suggestion, () =>
                {
                    Table(["SCOPE", "REQUESTS", "LAST USED"], suggestion.Used.Select(u => new[] { u.Scope, u.Requests.ToString(CultureInfo.InvariantCulture), u.LastUsedOn }));
                    Console.WriteLine(suggestion.Used.Length == 0 ? $"Token {id} was not used in the last {suggestion.Days} days; if it is not needed, revoke it."
                        : suggestion.Narrower ? $"It has {string.Join(' ', suggestion.Scopes)}; narrowing would keep {string.Join(' ', suggestion.Suggested)}."
                        : $"It uses all it has ({string.Join(' ', suggestion.Scopes)}): nothing to narrow.");
                });
                return;
            }
            var narrowed = await client.NarrowTokenAsync(id, chosen, cancellationToken);
            Print(parse, narrowed, () => Console.WriteLine($"Narrowed token {narrowed.Name} (id {id}) from {string.Join(' ', suggestion.Scopes)} to {string.Join(' ', narrowed.Scopes)}."));
        }));

        command.Subcommands.Add(create);
        command.Subcommands.Add(list);
        command.Subcommands.Add(show);
        command.Subcommands.Add(revoke);
        command.Subcommands.Add(rotate);
        command.Subcommands.Add(narrow);
        return command;
    }

    private static (int? Days, string? At) ParseExpiry(string? text) => text switch
    {
        null => (null, null),
        "never" => (null, null),
        _ when text.EndsWith('d') && int.TryParse(text[..^1], out var d) && d > 0 => (d, null),
        _ when DateOnly.TryParseExact(text, "yyyy-MM-dd", out _) => (null, text),
        _ => throw new CliException($"--expires '{text}' is not understood: use 30d, a date like 2027-01-31, or never.", 2),
    };

    /// <summary><c>--rate 10/s --rate 600/m</c>: the token's rate limit, or null when none is given.</summary>
    private static TokenRateLimit? ParseRate(string[]? given)
    {
        if (given is not { Length: > 0 })
            return null;
        long? perSecond = null, perMinute = null;
        foreach (var text in given)
        {
            var slash = text.IndexOf('/');
            var unit = slash < 0 ? "" : text[(slash + 1)..].Trim().ToLowerInvariant();
            if (slash < 0 || !long.TryParse(text.AsSpan(0, slash), NumberStyles.None, CultureInfo.InvariantCulture, out var n))
                throw new CliException($"--rate '{text}' is not understood: use a number per second or per minute, like 10/s or 600/m.", 2);
            if (unit is "s" or "sec" or "second")
                perSecond = n;
            else if (unit is "m" or "min" or "minute")
                perMinute = n;
            else
                throw new CliException($"--rate '{text}': the unit is s (per second) or m (per minute), like 10/s or 600/m.", 2);
        }
        return new TokenRateLimit(perSecond, perMinute);
    }

    private static string Rate(TokenRateLimit r) => string.Join(" and ",
        new[] { r.PerSecond is { } s ? $"{s}/s" : null, r.PerMinute is { } m ? $"{m}/m" : null }.OfType<string>());

    private static async Task<long> FindTokenAsync(PortcullisClient client, string idOrName, CancellationToken cancellationToken)
    {
        if (long.TryParse(idOrName, out var id))
            return id;
        var matches = (await client.ListTokensAsync(cancellationToken: cancellationToken)).Where(t => t.Name == idOrName && t.Status == "active").ToList();
        return matches.Count switch
        {
            1 => matches[0].Id,
            0 => throw new CliException($"You have no active token named '{idOrName}'. `portcullis token list` shows them."),
            _ => throw new CliException($"Several tokens are named '{idOrName}': give the id."),
        };
    }
}
