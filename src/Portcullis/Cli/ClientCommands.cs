using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Portcullis.Client;
using Portcullis.Security;

namespace Portcullis.Cli;

/// <summary>
/// The client commands of docs/cli.md. Each talks to a server through <see cref="PortcullisClient"/> with the
/// current context's credential, or <c>PORTCULLIS_URL</c> / <c>PORTCULLIS_TOKEN</c>, which override it.
/// </summary>
internal static partial class ClientCommands
{
    public static readonly Option<bool> JsonOption = new("--json") { Description = "Machine-readable JSON output.", Recursive = true };

    public static IEnumerable<Command> All()
    {
        yield return Login();
        yield return Logout();
        yield return WhoAmI();
        yield return Token();
        yield return Context();
        yield return Keys();
        yield return Scan();
        yield return Service();
        yield return User();
        yield return OAuthClient();
    }

    // --- Plumbing ------------------------------------------------------------------------------

    /// <summary>Runs a command body, turning expected failures into a message and an exit code.</summary>
    private static Func<ParseResult, CancellationToken, Task<int>> Run(Func<ParseResult, CancellationToken, Task> body) => async (parse, cancellationToken) =>
    {
        try
        {
            await body(parse, cancellationToken);
            return 0;
        }
        catch (CliException e)
        {
            if (e.Message.Length > 0)
                Console.Error.WriteLine($"error: {e.Message}");
            return e.ExitCode;
        }
        catch (PortcullisApiException e)
        {
            Console.Error.WriteLine("error: " + e.Status switch
            {
                HttpStatusCode.Unauthorized => $"{e.Message}\nYour credential is not accepted any more: log in again with `portcullis login`.",
                HttpStatusCode.Forbidden => $"{e.Message}\nYour credential lacks the rights for this.",
                _ => e.Message,
            });
            return 1;
        }
        catch (HttpRequestException e)
        {
            Console.Error.WriteLine($"error: cannot reach {Target.Describe()}: {e.Message}\nCheck the address (portcullis context current) and that the server runs.");
            return 1;
        }
        catch (TaskCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            Console.Error.WriteLine($"error: {Target.Describe()} did not answer in time.");
            return 1;
        }
    };

    /// <summary>The server and credential a command uses: environment first, then the current context.</summary>
    private static class Target
    {
        public static string? Url;

        public static string Describe() => Url ?? "the server";

        public static (string Url, string? Token, CliContext? Context) Resolve(bool needToken = true)
        {
            var config = new CredentialStore().Load();
            var context = config.Current is { } current ? config.Find(current) : null;
            var url = Environment.GetEnvironmentVariable("PORTCULLIS_URL") is { Length: > 0 } u ? u : context?.Endpoint;
            var token = Environment.GetEnvironmentVariable("PORTCULLIS_TOKEN") is { Length: > 0 } t ? t : context?.ApiToken;
            if (url is null)
                throw new CliException("No server: log in with `portcullis login --host URL`, or set PORTCULLIS_URL.");
            if (needToken && token is null)
                throw new CliException($"Not logged in to {url}: run `portcullis login`, or set PORTCULLIS_TOKEN.");
            Url = url;
            return (url, token, context);
        }

        public static PortcullisClient Client(string url, string? token)
        {
            Url = url;
            HttpMessageHandler handler = new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(10) };
            if (token is not null)
                handler = new BearerTokenHandler(token) { InnerHandler = handler };
            return new PortcullisClient(new HttpClient(handler) { BaseAddress = new Uri(url.TrimEnd('/') + "/"), Timeout = TimeSpan.FromSeconds(60) });
        }

        public static PortcullisClient Client()
        {
            var (url, token, _) = Resolve();
            return Client(url, token);
        }
    }

    /// <summary>Stable field names, snake_case, nulls included: scripts can rely on every field being there.</summary>
    private static readonly JsonSerializerOptions OutputJson = new(JsonSerializerDefaults.Web) { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    private static void Print(ParseResult parse, object json, Action human)
    {
        if (parse.GetValue(JsonOption))
            Console.WriteLine(JsonSerializer.Serialize(json, OutputJson));
        else
            human();
    }

    private static bool Color => !Console.IsOutputRedirected && Environment.GetEnvironmentVariable("NO_COLOR") is null;

    private static string Bold(string s) => Color ? $"\u001b[1m{s}\u001b[0m" : s;

    /// <summary>Aligned columns; the header bold on a terminal.</summary>
    private static void Table(string[] header, IEnumerable<string[]> rows)
    {
        var all = rows.ToList();
        var widths = header.Select((h, i) => Math.Max(h.Length, all.Count == 0 ? 0 : all.Max(r => r[i].Length))).ToArray();
        Console.WriteLine(Bold(string.Join("  ", header.Select((h, i) => h.PadRight(widths[i]))).TrimEnd()));
        foreach (var r in all)
            Console.WriteLine(string.Join("  ", r.Select((c, i) => c.PadRight(widths[i]))).TrimEnd());
    }

    private static string Date(DateTime? d) => d?.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture) ?? "never";

    private static string ReadSecretLine(string what)
    {
        var line = Console.In.ReadLine();
        if (string.IsNullOrEmpty(line))
            throw new CliException($"Nothing on standard input: pipe the {what} in, e.g. `echo \"$SECRET\" | portcullis ...`.", 2);
        return line.Trim();
    }

    private static string Prompt(string label, bool hidden = false)
    {
        if (Console.IsInputRedirected)
            throw new CliException($"{label.TrimEnd(':', ' ')} is needed and there is no terminal to ask on: pass it as an option (or --password-stdin).", 2);
        Console.Write(label + " ");
        if (!hidden)
            return Console.ReadLine()?.Trim() ?? "";
        var text = new StringBuilder();
        while (true)
        {
            var key = Console.ReadKey(intercept: true);
            if (key.Key == ConsoleKey.Enter)
                break;
            if (key.Key == ConsoleKey.Backspace)
            {
                if (text.Length > 0)
                    text.Length--;
            }
            else if (!char.IsControl(key.KeyChar))
                text.Append(key.KeyChar);
        }
        Console.WriteLine();
        return text.ToString();
    }

    // --- login, logout, whoami -----------------------------------------------------------------

    private static Command Login()
    {
        var host = new Option<string?>("--host") { Description = "The Portcullis server, e.g. https://auth.example.com." };
        var username = new Option<string?>("--username") { Description = "Your username." };
        var passwordStdin = new Option<bool>("--password-stdin") { Description = "Read the password from standard input (for scripts)." };
        var tokenStdin = new Option<bool>("--api-token-stdin") { Description = "Log in with an API token read from standard input instead of a password." };
        var command = new Command("login", "Log in to a server and store the credential (never the password).\n\nExamples:\n  portcullis login\n  portcullis login --host https://auth.example.com --username alice\n  echo \"$PASSWORD\" | portcullis login --host URL --username alice --password-stdin\n  echo \"$TOKEN\" | portcullis login --host URL --api-token-stdin")
        {
            host, username, passwordStdin, tokenStdin,
        };
        command.SetAction(Run(async (parse, cancellationToken) =>
        {
            var config = new CredentialStore().Load();
            var remembered = config.Find(config.Current ?? "")?.Endpoint;
            var url = parse.GetValue(host);
            if (url is null && !Console.IsInputRedirected)
                url = Prompt(remembered is null ? "Portcullis host:" : $"Portcullis host [{remembered}]:") is { Length: > 0 } typed ? typed : remembered;
            url ??= remembered ?? throw new CliException("Give the server with --host URL.", 2);
            if (!url.Contains("://", StringComparison.Ordinal))
                url = "https://" + url;
            if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
                throw new CliException($"'{url}' is not a server address. Use e.g. https://auth.example.com.", 2);
            url = uri.GetLeftPart(UriPartial.Path).TrimEnd('/');

            string credential, user;
            if (parse.GetValue(tokenStdin))
            {
                credential = ReadSecretLine("API token");
                var me = await Target.Client(url, credential).GetMeAsync(cancellationToken);
                // Every command of this CLI calls the API: a token without 'api' would log in, then fail at every step.
                if (!me.Auth.Scopes.Contains("api"))
                {
                    throw new CliException(
                        $"This token has only '{string.Join(' ', me.Auth.Scopes)}': logging in needs a token with Developer Operations Access " +
                        "(the 'api' scope). Create one in the web UI (Tokens, Generate new token, tick Developer Operations Access), or log in " +
                        "with your password and run 'portcullis token create NAME'. A services-only token is used directly: 'Authorization: Bearer <token>'.");
                }
                user = me.Username;
            }
            else
            {
                user = parse.GetValue(username) ?? Prompt("Username:");
                var password = parse.GetValue(passwordStdin) ? ReadSecretLine("password") : Prompt("Password:", hidden: true);
                credential = (await Target.Client(url, null).LoginAsync(user, password, cli: true, cancellationToken)).Token;
            }
            var name = uri.Authority;
            new CredentialStore().Update(c =>
            {
                c.Contexts.RemoveAll(x => x.Name == name);
                c.Contexts.Add(new CliContext { Name = name, Endpoint = url, Username = user, ApiToken = credential });
                c.Current = name;
                return 0;
            });
            Print(parse, new { endpoint = url, username = user, context = name }, () => Console.WriteLine($"Logged in to {url} as {user}"));
        }));
        return command;
    }

    private static Command Logout()
    {
        var command = new Command("logout", "Revoke the stored credential on the server, then forget it here.\n\nExample:\n  portcullis logout");
        command.SetAction(Run(async (parse, cancellationToken) =>
        {
            var config = new CredentialStore().Load();
            var context = config.Current is { } current ? config.Find(current) : null;
            if (context?.ApiToken is not { } token)
                throw new CliException("Not logged in: nothing to log out of.");
            // Revoked first: a credential that only disappears from this machine would still work for whoever copied it.
            await Target.Client(context.Endpoint, null).RevokeAsync(token, cancellationToken);
            new CredentialStore().Update(c =>
            {
                c.Contexts.RemoveAll(x => x.Name == context.Name);
                c.Current = c.Contexts.FirstOrDefault()?.Name;
                return 0;
            });
            Print(parse, new { endpoint = context.Endpoint, logged_out = true }, () => Console.WriteLine($"Logged out of {context.Endpoint}; the credential is revoked."));
        }));
        return command;
    }

    private static Command WhoAmI()
    {
        var command = new Command("whoami", "Show who the current credential belongs to.\n\nExample:\n  portcullis whoami --json");
        command.SetAction(Run(async (parse, cancellationToken) =>
        {
            var me = await Target.Client().GetMeAsync(cancellationToken);
            Print(parse, new { username = me.Username, admin = me.Admin, endpoint = Target.Url, auth = me.Auth },
                () => Console.WriteLine($"{me.Username}{(me.Admin ? " (admin)" : "")} on {Target.Url}, with {Describe(me.Auth.Kind)} ({string.Join(' ', me.Auth.Scopes)})"));
        }));
        return command;
    }

    private static string Describe(string credentialKind) => credentialKind switch
    {
        "api_token" => "an API token",
        "jwt" => "an access token (JWT)",
        "session" => "a web session",
        "service" => "a service token",
        var other => "a credential of kind " + other,
    };

    // --- token ---------------------------------------------------------------------------------

    private static Command Token()
    {
        var days = new Argument<int?>("DAYS") { Description = "Days until it expires (default: the server's default lifetime, or never).", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("token", "Create a token with scopes 'api services' and print it (Daeploy style); or manage tokens.\n\nExamples:\n  portcullis token 30\n  portcullis token create ci --expires 90d --scope services\n  portcullis token list --all") { days };
        command.SetAction(Run(async (parse, cancellationToken) =>
        {
            var lifetime = parse.GetValue(days);
            if (lifetime is < 1)
                throw new CliException("DAYS must be a positive number of days.", 2);
            var name = "cli-" + DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);
            var created = await Target.Client().CreateTokenAsync(new CreateTokenRequest(name, "Created with portcullis token", lifetime, ["api", "services"]), cancellationToken);
            Print(parse, new { host = Target.Url, created.Id, created.Name, created.Token, created.ExpiresAt }, () =>
            {
                Console.WriteLine($"Active host: {Target.Url}");
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
        var create = new Command("create", "Create a named token.\n\nExample:\n  portcullis token create deploy --expires 30d --scope services:model") { tokenName, description, expires, scope };
        create.SetAction(Run(async (parse, cancellationToken) =>
        {
            var (days, at) = ParseExpiry(parse.GetValue(expires));
            var scopes = parse.GetValue(scope) is { Length: > 0 } s ? s : null;
            var body = new Dictionary<string, object?> { ["name"] = parse.GetValue(tokenName), ["description"] = parse.GetValue(description), ["scopes"] = scopes };
            if (days is not null) body["expires_in_days"] = days;
            if (at is not null) body["expires_at"] = at;
            var created = (await Target.Client().SendJsonAsync(HttpMethod.Post, "api/v1/tokens", body, cancellationToken))!.Value;
            Print(parse, created, () =>
            {
                Console.WriteLine($"Created token {created.GetProperty("name").GetString()} (id {created.GetProperty("id")}), expires {created.GetProperty("expires_at")}. It is shown only this once:");
                Console.WriteLine(created.GetProperty("token").GetString());
            });
        }));

        var all = new Option<bool>("--all") { Description = "Everyone's tokens (admin)." };
        var list = new Command("list", "List your tokens (never their secrets).\n\nExample:\n  portcullis token list --json") { all };
        list.SetAction(Run(async (parse, cancellationToken) =>
        {
            var tokens = await Target.Client().ListTokensAsync(parse.GetValue(all), cancellationToken: cancellationToken);
            Print(parse, tokens, () => Table(["ID", "NAME", "TOKEN", "SCOPES", "EXPIRES", "LAST USED", "STATUS", "OWNER"],
                tokens.Select(t => new[] { t.Id.ToString(CultureInfo.InvariantCulture), t.Name, t.TokenHint, string.Join(' ', t.Scopes), Date(t.ExpiresAt), Date(t.LastUsedAt), t.Status, t.Owner ?? "" })));
        }));

        var idOrName = new Argument<string>("ID|NAME");
        var show = new Command("show", "Show one token.\n\nExample:\n  portcullis token show deploy") { idOrName };
        show.SetAction(Run(async (parse, cancellationToken) =>
        {
            var client = Target.Client();
            var token = await client.GetTokenAsync(await FindTokenAsync(client, parse.GetValue(idOrName)!, cancellationToken), cancellationToken);
            Print(parse, token, () => Table(["FIELD", "VALUE"], [
                ["id", token.Id.ToString(CultureInfo.InvariantCulture)], ["name", token.Name], ["description", token.Description ?? ""], ["token", token.TokenHint],
                ["scopes", string.Join(' ', token.Scopes)], ["created", Date(token.CreatedAt)], ["expires", Date(token.ExpiresAt)],
                ["last used", token.LastUsedAt is null ? "never" : $"{Date(token.LastUsedAt)} from {token.LastUsedIp}"], ["status", token.Status]]));
        }));

        var revoke = new Command("revoke", "Revoke a token: it stops working at once.\n\nExample:\n  portcullis token revoke deploy") { idOrName };
        revoke.SetAction(Run(async (parse, cancellationToken) =>
        {
            var client = Target.Client();
            var id = await FindTokenAsync(client, parse.GetValue(idOrName)!, cancellationToken);
            await client.RevokeTokenAsync(id, cancellationToken);
            Print(parse, new { id, revoked = true }, () => Console.WriteLine($"Revoked token {id}."));
        }));

        var grace = new Option<int>("--grace-seconds") { Description = "Keep the old token working this long (default 0)." };
        var rotate = new Command("rotate", "Replace a token's secret, keeping its settings; prints the new token.\n\nExample:\n  portcullis token rotate deploy --grace-seconds 300") { idOrName, grace };
        rotate.SetAction(Run(async (parse, cancellationToken) =>
        {
            var client = Target.Client();
            var created = await client.RotateTokenAsync(await FindTokenAsync(client, parse.GetValue(idOrName)!, cancellationToken), parse.GetValue(grace), cancellationToken);
            Print(parse, created, () =>
            {
                Console.WriteLine($"New secret for {created.Name} (id {created.Id}). It is shown only this once:");
                Console.WriteLine(created.Token);
            });
        }));

        command.Subcommands.Add(create);
        command.Subcommands.Add(list);
        command.Subcommands.Add(show);
        command.Subcommands.Add(revoke);
        command.Subcommands.Add(rotate);
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

    // --- context -------------------------------------------------------------------------------

    private static Command Context()
    {
        var command = new Command("context", "The servers you are logged in to; one is current.\n\nExamples:\n  portcullis context list\n  portcullis context use auth.example.com\n  portcullis context current --json");
        var list = new Command("list", "List the stored contexts; * marks the current one.\n\nExample:\n  portcullis context list --json");
        list.SetAction(Run((parse, _) =>
        {
            var config = new CredentialStore().Load();
            Print(parse, config.Contexts.Select(c => new { c.Name, c.Endpoint, c.Username, current = c.Name == config.Current }),
                () => Table(["", "NAME", "ENDPOINT", "USERNAME"], config.Contexts.Select(c => new[] { c.Name == config.Current ? "*" : "", c.Name, c.Endpoint, c.Username ?? "" })));
            return Task.CompletedTask;
        }));
        var name = new Argument<string>("NAME");
        var use = new Command("use", "Make a context current.\n\nExample:\n  portcullis context use auth.example.com") { name };
        use.SetAction(Run((parse, _) =>
        {
            var wanted = parse.GetValue(name)!;
            new CredentialStore().Update(c =>
            {
                if (c.Find(wanted) is null)
                    throw new CliException($"There is no context '{wanted}'. `portcullis context list` shows them.");
                c.Current = wanted;
                return 0;
            });
            Print(parse, new { current = wanted }, () => Console.WriteLine($"Now using {wanted}."));
            return Task.CompletedTask;
        }));
        var current = new Command("current", "Show the current context (with --json: name, endpoint, username, api_token).\n\nExample:\n  TOKEN=$(portcullis context current --json | jq -r .api_token)");
        current.SetAction(Run((parse, _) =>
        {
            var (url, token, context) = Target.Resolve(needToken: false);
            // This command's purpose includes handing the credential to scripts, in JSON only.
            Print(parse, new { name = context?.Name ?? "environment", endpoint = url, username = context?.Username, api_token = token },
                () => Console.WriteLine($"{context?.Name ?? "(from PORTCULLIS_URL)"}: {url}{(context?.Username is { } u ? " as " + u : "")}"));
            return Task.CompletedTask;
        }));
        command.Subcommands.Add(list);
        command.Subcommands.Add(use);
        command.Subcommands.Add(current);
        return command;
    }

    // --- keys, services, users, clients --------------------------------------------------------

    private static Command Keys()
    {
        var rotate = new Command("rotate", "Make a new JWT signing key; tokens of the old one keep working until they expire (admin).\n\nExample:\n  portcullis keys rotate");
        rotate.SetAction(Run(async (parse, cancellationToken) =>
        {
            var result = (await Target.Client().SendJsonAsync(HttpMethod.Post, "api/v1/keys/rotate", null, cancellationToken))!.Value;
            Print(parse, result, () => Console.WriteLine($"New signing key {result.GetProperty("kid").GetString()}."));
        }));
        var command = new Command("keys", "JWT signing keys.\n\nExample:\n  portcullis keys rotate");
        command.Subcommands.Add(rotate);
        return command;
    }

    private static Command Service()
    {
        var command = new Command("service", "Services behind the gateway.\n\nExamples:\n  portcullis service list\n  portcullis service add model 1.0 http://127.0.0.1:5000\n  portcullis service add model 2.0 http://10.0.0.5:5000 http://10.0.0.6:5000 --health-check /healthz\n  portcullis service remove model 1.0");
        var list = new Command("list", "The services you may reach (admins also see each replica and its health).\n\nExample:\n  portcullis service list --json");
        list.SetAction(Run(async (parse, cancellationToken) =>
        {
            var services = await Target.Client().ListServicesAsync(cancellationToken);
            Print(parse, services, () => Table(["NAME", "VERSION", "ORIGIN", "PATH", "PROTECTED", "UPSTREAMS"],
                services.Select(s => new[] { s.Name, s.Version, s.Origin, s.Path, s.Protected ? "yes" : "no",
                    string.Join(", ", (s.Destinations ?? []).Select(d => $"{d.Address} ({d.Health})")) })));
        }));
        var name = new Argument<string>("NAME");
        var version = new Argument<string>("VERSION");
        var upstreams = new Argument<string[]>("UPSTREAM") { Arity = ArgumentArity.OneOrMore, Description = "The service's URL; several for replicas." };
        var unprotected = new Option<bool>("--unprotected") { Description = "Anyone may call it, without a credential." };
        var healthCheck = new Option<string?>("--health-check") { Description = "A path each replica answers with 2xx when healthy, e.g. /healthz." };
        var healthInterval = new Option<int?>("--health-interval") { Description = "Seconds between health checks (default 10)." };
        var add = new Command("add", "Register a service (admin); several upstreams are replicas, load-balanced.\n\nExamples:\n  portcullis service add model 1.0 http://127.0.0.1:5000\n  portcullis service add model 2.0 http://10.0.0.5:5000 http://10.0.0.6:5000 --health-check /healthz")
            { name, version, upstreams, unprotected, healthCheck, healthInterval };
        add.SetAction(Run(async (parse, cancellationToken) =>
        {
            var addresses = parse.GetValue(upstreams)!;
            var health = parse.GetValue(healthCheck) is { } path ? new { path, interval_seconds = parse.GetValue(healthInterval) } : null;
            var created = (await Target.Client().SendJsonAsync(HttpMethod.Post, "api/v1/services",
                new { name = parse.GetValue(name), version = parse.GetValue(version), upstreams = addresses, @protected = !parse.GetValue(unprotected), health_check = health },
                cancellationToken))!.Value;
            Print(parse, created, () => Console.WriteLine(
                $"Registered {parse.GetValue(name)} {parse.GetValue(version)} ({addresses.Length} upstream{(addresses.Length == 1 ? "" : "s")}): browsers use {created.GetProperty("origin").GetString()}, programs {created.GetProperty("path").GetString()}"));
        }));
        var remove = new Command("remove", "Remove a service registered through the API (admin).\n\nExample:\n  portcullis service remove model 1.0") { name, version };
        remove.SetAction(Run(async (parse, cancellationToken) =>
        {
            await Target.Client().SendJsonAsync(HttpMethod.Delete, $"api/v1/services/{Uri.EscapeDataString(parse.GetValue(name)!)}_{Uri.EscapeDataString(parse.GetValue(version)!)}", null, cancellationToken);
            Print(parse, new { removed = true }, () => Console.WriteLine($"Removed {parse.GetValue(name)} {parse.GetValue(version)}."));
        }));
        command.Subcommands.Add(list);
        command.Subcommands.Add(add);
        command.Subcommands.Add(remove);
        return command;
    }

    private static Command User()
    {
        var command = new Command("user", "Users (admin).\n\nExamples:\n  portcullis user list\n  echo \"$PASSWORD\" | portcullis user add bob --password-stdin\n  portcullis user disable bob");
        var list = new Command("list", "List users (admin).\n\nExample:\n  portcullis user list --json");
        list.SetAction(Run(async (parse, cancellationToken) =>
        {
            var users = (await Target.Client().SendJsonAsync(HttpMethod.Get, "api/v1/users", null, cancellationToken))!.Value;
            Print(parse, users, () => Table(["USERNAME", "KIND", "ADMIN", "DISABLED"], users.EnumerateArray().Select(u => new[]
                { u.GetProperty("username").GetString()!, u.GetProperty("kind").GetString()!, u.GetProperty("admin").GetBoolean() ? "yes" : "", u.GetProperty("disabled").GetBoolean() ? "yes" : "" })));
        }));
        var name = new Argument<string>("USERNAME");
        var admin = new Option<bool>("--admin") { Description = "Make the user an administrator." };
        var passwordStdin = new Option<bool>("--password-stdin") { Description = "Read the password from standard input." };
        var add = new Command("add", "Create a user; the password is asked for (or read with --password-stdin).\n\nExample:\n  echo \"$PASSWORD\" | portcullis user add bob --password-stdin") { name, admin, passwordStdin };
        add.SetAction(Run(async (parse, cancellationToken) =>
        {
            var password = parse.GetValue(passwordStdin) ? ReadSecretLine("password") : Prompt("Password:", hidden: true);
            await Target.Client().SendJsonAsync(HttpMethod.Post, "api/v1/users", new { username = parse.GetValue(name), password, admin = parse.GetValue(admin) }, cancellationToken);
            Print(parse, new { username = parse.GetValue(name), created = true }, () => Console.WriteLine($"Created user {parse.GetValue(name)}."));
        }));
        var disable = new Command("disable", "Disable a user: their tokens and sessions stop working at once.\n\nExample:\n  portcullis user disable bob") { name };
        disable.SetAction(Run(async (parse, cancellationToken) =>
        {
            await Target.Client().SendJsonAsync(HttpMethod.Patch, $"api/v1/users/{Uri.EscapeDataString(parse.GetValue(name)!)}", new { disabled = true }, cancellationToken);
            Print(parse, new { username = parse.GetValue(name), disabled = true }, () => Console.WriteLine($"Disabled {parse.GetValue(name)}."));
        }));
        var remove = new Command("remove", "Delete a user and their tokens.\n\nExample:\n  portcullis user remove bob") { name };
        remove.SetAction(Run(async (parse, cancellationToken) =>
        {
            await Target.Client().SendJsonAsync(HttpMethod.Delete, $"api/v1/users/{Uri.EscapeDataString(parse.GetValue(name)!)}", null, cancellationToken);
            Print(parse, new { username = parse.GetValue(name), removed = true }, () => Console.WriteLine($"Removed {parse.GetValue(name)}."));
        }));
        var passwd = new Command("passwd", "Set a user's password (asked for, or --password-stdin).\n\nExample:\n  portcullis user passwd bob") { name, passwordStdin };
        passwd.SetAction(Run(async (parse, cancellationToken) =>
        {
            var password = parse.GetValue(passwordStdin) ? ReadSecretLine("password") : Prompt("New password:", hidden: true);
            await Target.Client().SendJsonAsync(HttpMethod.Patch, $"api/v1/users/{Uri.EscapeDataString(parse.GetValue(name)!)}", new { password }, cancellationToken);
            Print(parse, new { username = parse.GetValue(name), password_changed = true }, () => Console.WriteLine($"Changed the password of {parse.GetValue(name)}."));
        }));
        foreach (var c in new[] { list, add, disable, remove, passwd })
            command.Subcommands.Add(c);
        return command;
    }

    private static Command OAuthClient()
    {
        var command = new Command("client", "OAuth clients (client credentials).\n\nExamples:\n  portcullis client create deployer --scope services\n  portcullis client list\n  portcullis client rotate-secret CLIENT_ID");
        var name = new Argument<string>("NAME");
        var scope = new Option<string[]>("--scope") { Description = "Scopes of the client; repeat for several." };
        var create = new Command("create", "Create a client; prints its secret once.\n\nExample:\n  portcullis client create deployer --scope services:model") { name, scope };
        create.SetAction(Run(async (parse, cancellationToken) =>
        {
            var scopes = parse.GetValue(scope) is { Length: > 0 } s ? s : ["services"];
            var created = (await Target.Client().SendJsonAsync(HttpMethod.Post, "api/v1/clients", new { name = parse.GetValue(name), scopes }, cancellationToken))!.Value;
            Print(parse, created, () =>
            {
                Console.WriteLine($"client_id:     {created.GetProperty("client_id").GetString()}");
                Console.WriteLine($"client_secret: {created.GetProperty("client_secret").GetString()}  (shown only this once)");
            });
        }));
        var list = new Command("list", "List your clients (all of them for admins).\n\nExample:\n  portcullis client list --json");
        list.SetAction(Run(async (parse, cancellationToken) =>
        {
            var clients = (await Target.Client().SendJsonAsync(HttpMethod.Get, "api/v1/clients", null, cancellationToken))!.Value;
            Print(parse, clients, () => Table(["CLIENT ID", "NAME", "SCOPES", "OWNER", "SECRET"], clients.EnumerateArray().Select(c => new[]
                { c.GetProperty("client_id").GetString()!, c.GetProperty("name").GetString()!, string.Join(' ', c.GetProperty("scopes").EnumerateArray().Select(x => x.GetString())),
                  c.GetProperty("owner").GetString()!, c.GetProperty("secret_hint").GetString()! })));
        }));
        var id = new Argument<string>("CLIENT_ID");
        var delete = new Command("delete", "Delete a client; its tokens stop working at once.\n\nExample:\n  portcullis client delete client-3k9x...") { id };
        delete.SetAction(Run(async (parse, cancellationToken) =>
        {
            await Target.Client().SendJsonAsync(HttpMethod.Delete, $"api/v1/clients/{Uri.EscapeDataString(parse.GetValue(id)!)}", null, cancellationToken);
            Print(parse, new { client_id = parse.GetValue(id), deleted = true }, () => Console.WriteLine($"Deleted {parse.GetValue(id)}."));
        }));
        var rotate = new Command("rotate-secret", "Give a client a new secret; the old one and its tokens stop at once.\n\nExample:\n  portcullis client rotate-secret client-3k9x...") { id };
        rotate.SetAction(Run(async (parse, cancellationToken) =>
        {
            var result = (await Target.Client().SendJsonAsync(HttpMethod.Post, $"api/v1/clients/{Uri.EscapeDataString(parse.GetValue(id)!)}/rotate-secret", null, cancellationToken))!.Value;
            Print(parse, result, () => Console.WriteLine($"client_secret: {result.GetProperty("client_secret").GetString()}  (shown only this once)"));
        }));
        foreach (var c in new[] { create, list, delete, rotate })
            command.Subcommands.Add(c);
        return command;
    }

    // --- scan ----------------------------------------------------------------------------------

    [GeneratedRegex(@"\b(pc[psc])_[0-9A-Za-z]{36}\b")]
    private static partial Regex TokenPattern();

    private static Command Scan()
    {
        var paths = new Argument<string[]>("PATH") { Description = "Files or directories to search.", Arity = ArgumentArity.OneOrMore };
        var revoke = new Option<bool>("--revoke") { Description = "Revoke every token found, through /auth/revoke of the current server." };
        var command = new Command("scan", "Find Portcullis tokens in files (pattern and checksum, so look-alikes are not reported). Exit 1 when any is found.\n\nExamples:\n  portcullis scan .\n  portcullis scan leaked.log --revoke") { paths, revoke };
        command.SetAction(Run(async (parse, cancellationToken) =>
        {
            var format = new TokenFormat("pc");
            var found = new List<(string File, int Line, string Token)>();
            foreach (var path in parse.GetValue(paths)!)
            {
                IEnumerable<string> files = Directory.Exists(path)
                    ? Directory.EnumerateFiles(path, "*", new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true, AttributesToSkip = FileAttributes.ReparsePoint })
                        .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}.git{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
                    : File.Exists(path) ? [path] : throw new CliException($"{path}: no such file or directory.", 2);
                foreach (var file in files)
                {
                    var number = 0;
                    foreach (var line in File.ReadLines(file))
                    {
                        number++;
                        foreach (Match m in TokenPattern().Matches(line))
                        {
                            if (format.TryRead(m.Value, out _))
                                found.Add((file, number, m.Value));
                        }
                    }
                }
            }
            var revoked = 0;
            if (parse.GetValue(revoke) && found.Count > 0)
            {
                var (url, _, _) = Target.Resolve(needToken: false);
                var client = Target.Client(url, null);
                foreach (var token in found.Select(f => f.Token).Distinct())
                {
                    await client.RevokeAsync(token, cancellationToken);
                    revoked++;
                }
            }
            Print(parse, new { found = found.Select(f => new { file = f.File, line = f.Line, hint = format.Hint(f.Token) }), revoked }, () =>
            {
                foreach (var (file, line, token) in found)
                    Console.WriteLine($"{file}:{line}: {format.Hint(token)}");
                Console.Error.WriteLine(found.Count == 0 ? "No Portcullis tokens found." :
                    $"{found.Count} Portcullis token{(found.Count == 1 ? "" : "s")} found{(revoked > 0 ? $"; {revoked} revoked" : ". Revoke them with --revoke, or in the web UI")}.");
            });
            if (found.Count > 0)
                throw new FoundTokens();
        }));
        return command;
    }

    /// <summary>Exit 1 without an error message: finding tokens is the answer, not a failure to run.</summary>
    private sealed class FoundTokens() : CliException("", 1);
}
