using System.CommandLine;
using System.Net;
using static Portcullis.Cli.CommandSupport;

namespace Portcullis.Cli;

/// <summary><c>login</c>, <c>logout</c>, <c>whoami</c> (docs/cli.md).</summary>
internal static partial class LoginCommands
{
    public static IEnumerable<Command> All()
    {
        yield return Login();
        yield return Logout();
        yield return WhoAmI();
    }

    /// <summary>The ways to log in, as the menu offers them.</summary>
    private enum LoginMethod
    {
        Web,
        ApiToken,
        Password,
        OidcToken,
    }

    private static readonly (LoginMethod Method, string Text)[] Methods =
    [
        (LoginMethod.Web, "Create a new API token with a web browser"),
        (LoginMethod.ApiToken, "Paste an existing API token"),
        (LoginMethod.Password, "Username and password"),
    ];

    private static Command Login()
    {
        var host = new Option<string?>("--host") { Description = "The Portcullis server, e.g. https://auth.example.com." };
        var username = new Option<string?>("--username") { Description = "Your username (logs in with a password)." };
        var passwordStdin = new Option<bool>("--password-stdin") { Description = "Read the password from standard input (for scripts)." };
        var tokenStdin = new Option<bool>("--api-token-stdin") { Description = "Log in with an API token read from standard input instead of a password." };
        var oidcStdin = new Option<bool>("--oidc-token-stdin")
        {
            Description = "Trade an OpenID Connect token of a trusted issuer (a CI job's), read from standard input, for a short-lived token (docs/trusted-issuers.md).",
        };
        var web = new Option<bool>("--web") { Description = "Log in with a web browser: approve a new API token for this terminal at the server's /device page." };
        var noBrowser = new Option<bool>("--no-browser") { Description = "With --web: print the address and the code, never open a browser." };
        var printToken = new Option<bool>("--print-token") { Description = "Also print the credential that is stored (it is never printed otherwise)." };
        var command = new Command("login",
            "Log in to a server and store the credential (never the password). On a terminal with no choice given, asks how.\n\n" +
            "Examples:\n  portcullis login\n  portcullis login --host https://auth.example.com --web\n  portcullis login --host https://auth.example.com --username alice\n" +
            "  echo \"$PASSWORD\" | portcullis login --host URL --username alice --password-stdin\n  echo \"$TOKEN\" | portcullis login --host URL --api-token-stdin\n" +
            "  echo \"$CI_JOB_JWT\" | portcullis login --host URL --oidc-token-stdin")
        {
            host, username, passwordStdin, tokenStdin, oidcStdin, web, noBrowser, printToken,
        };
        command.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var chosen = new[]
                {
                    (parse.GetValue(web), LoginMethod.Web), (parse.GetValue(tokenStdin), LoginMethod.ApiToken), (parse.GetValue(passwordStdin), LoginMethod.Password),
                    (parse.GetValue(oidcStdin), LoginMethod.OidcToken),
                }
                .Where(c => c.Item1).Select(c => c.Item2).ToList();
            if (chosen.Count > 1)
                throw new CliException("Choose one way to log in: --web, --api-token-stdin, --password-stdin or --oidc-token-stdin.", 2);
            var method = chosen.Count == 1 ? chosen[0] : parse.GetValue(username) is not null ? LoginMethod.Password : (LoginMethod?)null;
            if (parse.GetValue(noBrowser) && method is not (null or LoginMethod.Web))
                throw new CliException("--no-browser goes with --web.", 2);

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

            method ??= Interactive.IsTerminal
                ? Interactive.Choose("How would you like to authenticate?", Methods)
                : throw new CliException("Choose how to log in: --web (approve a new API token in a browser), --api-token-stdin, --oidc-token-stdin (in CI), " +
                                         "or --username with --password-stdin. There is no terminal to ask on.", 2);
            var (credential, user) = method switch
            {
                LoginMethod.Web => await WebLoginAsync(target, url, parse.GetValue(noBrowser), cancellationToken),
                LoginMethod.ApiToken => await TokenLoginAsync(target, url, ReadSecretLine("API token"), cancellationToken),
                LoginMethod.OidcToken => await ExchangeLoginAsync(target, url, ReadSecretLine("OpenID Connect token"), cancellationToken),
                _ => await PasswordLoginAsync(target, url, parse.GetValue(username), parse.GetValue(passwordStdin), cancellationToken),
            };
            var name = uri.Authority;
            new CredentialStore().Update(c =>
            {
                c.Contexts.RemoveAll(x => x.Name == name);
                c.Contexts.Add(new CliContext { Name = name, Endpoint = url, Username = user, ApiToken = credential });
                c.Current = name;
                return 0;
            });
            var shown = parse.GetValue(printToken) ? credential : null;
            Print(parse, new { endpoint = url, username = user, context = name, token = shown }, () =>
            {
                Console.WriteLine($"Logged in to {url} as {user}");
                if (shown is not null)
                    Console.WriteLine(shown);
            });
        }));
        return command;
    }

    private static async Task<(string Credential, string User)> TokenLoginAsync(CliTarget target, string url, string token, CancellationToken cancellationToken)
    {
        var me = await target.Client(url, token).GetMeAsync(cancellationToken);
        // Every command of this CLI calls the API: a token without 'api' would log in, then fail at every step.
        if (!me.Auth.Scopes.Contains("api"))
        {
            throw new CliException(
                $"This token has only '{string.Join(' ', me.Auth.Scopes)}': logging in needs a token with Developer Operations Access " +
                "(the 'api' scope). Create one in the web UI (Tokens, Generate new token, tick Developer Operations Access), or log in " +
                "with your password and run 'portcullis token create NAME'. A services-only token is used directly: 'Authorization: Bearer <token>'.");
        }
        return (token, me.Username);
    }

    /// <summary>
    /// The token exchange (RFC 8693): a CI job's OIDC token for a short-lived access token of the principal a rule of the
    /// server names. Nothing long-lived is stored: when the access token expires, the job asks its provider again.
    /// </summary>
    private static async Task<(string Credential, string User)> ExchangeLoginAsync(CliTarget target, string url, string subjectToken, CancellationToken cancellationToken)
    {
        var issued = await target.Client(url, null).ExchangeTokenAsync(subjectToken, cancellationToken: cancellationToken);
        var me = await target.Client(url, issued.Token).GetMeAsync(cancellationToken);
        var minutes = Math.Max(1, issued.ExpiresIn / 60);
        Console.Error.WriteLine($"Exchanged for a token of {me.Username} with '{issued.Scope}' for {minutes} minute{(minutes == 1 ? "" : "s")}.");
        if (!me.Auth.Scopes.Contains("api"))
            Console.Error.WriteLine("It has no 'api' scope, so the commands of this CLI will be refused; use it as 'Authorization: Bearer <token>' (--print-token).");
        return (issued.Token, me.Username);
    }

    private static async Task<(string Credential, string User)> PasswordLoginAsync(CliTarget target, string url, string? username, bool passwordStdin,
        CancellationToken cancellationToken)
    {
        var user = username ?? Prompt("Username:");
        var password = passwordStdin ? ReadSecretLine("password") : Prompt("Password:", hidden: true);
        return ((await target.Client(url, null).LoginAsync(user, password, cli: true, cancellationToken)).Token, user);
    }

    /// <summary>
    /// The device grant (RFC 8628): show the address and the code, open the browser when there is one, and poll at the
    /// server's interval (slower when told to) until the person approves or denies, or the code expires.
    /// </summary>
    private static async Task<(string Credential, string User)> WebLoginAsync(CliTarget target, string url, bool noBrowser, CancellationToken cancellationToken)
    {
        var client = target.Client(url, null);
        DeviceAuthorizationResponse start;
        try
        {
            start = await client.StartDeviceLoginAsync("api services", Environment.MachineName, cancellationToken);
        }
        catch (PortcullisApiException e) when (e.Status is HttpStatusCode.NotFound or HttpStatusCode.MethodNotAllowed)
        {
            throw new CliException($"{url} does not offer logging in with a browser (an older Portcullis, or not Portcullis). " +
                                   "Log in with --api-token-stdin or --username instead.");
        }
        // What the server sends is printed and may be handed to a browser program: only a code of the right shape and web addresses.
        if (start.UserCode is null || !UserCodeShape().IsMatch(start.UserCode) || !IsWebAddress(start.VerificationUri) || !IsWebAddress(start.VerificationUriComplete))
            throw new CliException($"{url} answered the device login with something that is not a web address and a code; is it a Portcullis server?");
        Console.WriteLine($"Open {start.VerificationUri} and enter {Bold(start.UserCode)}");
        Console.WriteLine($"  or open {start.VerificationUriComplete}");
        if (!noBrowser && !IsOn(start.VerificationUriComplete, url))
            Console.WriteLine($"(Not opened for you: the address is not on {url}. Open it yourself if you trust it.)");
        else if (!noBrowser && Browser.TryOpen(start.VerificationUriComplete))
            Console.WriteLine("Your browser has been opened; check that it shows the same code.");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(start.ExpiresIn) + TimeSpan.FromSeconds(30);
        var interval = TimeSpan.FromSeconds(Math.Max(1, start.Interval));
        string? token = null;
        try
        {
            await Interactive.WaitAsync("Waiting for the approval in the browser (Ctrl-C to stop)", async () =>
            {
                while (token is null)
                {
                    if (DateTime.UtcNow > deadline)
                        throw Expired(start);
                    await Task.Delay(interval, cancellationToken);
                    DevicePoll poll;
                    try
                    {
                        poll = await client.PollDeviceLoginAsync(start.DeviceCode, cancellationToken);
                    }
                    catch (Exception e) when (e is HttpRequestException || e is PortcullisApiException { Status: >= HttpStatusCode.InternalServerError }
                                              || e is TaskCanceledException && !cancellationToken.IsCancellationRequested)
                    {
                        // A server restarting or a network hiccup: back off and ask again while the code lives (RFC 8628 §3.5).
                        interval = TimeSpan.FromSeconds(Math.Min(60, interval.TotalSeconds * 2));
                        continue;
                    }
                    switch (poll.Error)
                    {
                        case null:
                            token = poll.Token;
                            break;
                        case "slow_down":
                            interval += TimeSpan.FromSeconds(5);
                            break;
                        case "access_denied":
                            throw new CliException("The login was denied in the browser. Nothing was stored.");
                        case "expired_token":
                            throw Expired(start);
                    }
                }
            });
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw new CliException("Stopped before the login was approved. Nothing was stored; the code expires by itself.", 130);
        }
        var me = await target.Client(url, token).GetMeAsync(cancellationToken);
        // Every command of this CLI calls the API: a token without 'api' would log in, then fail at every step.
        if (!me.Auth.Scopes.Contains("api"))
        {
            await client.RevokeAsync(token!, cancellationToken);
            throw new CliException("The token approved in the browser has no Developer Operations Access (the 'api' scope), which the CLI needs; " +
                                   "it was revoked. Run `portcullis login --web` again and keep Developer Operations Access ticked.");
        }
        return (token!, me.Username);
    }

    [System.Text.RegularExpressions.GeneratedRegex("^[A-Z]{4}-[A-Z]{4}$")]
    private static partial System.Text.RegularExpressions.Regex UserCodeShape();

    private static bool IsWebAddress(string? address) =>
        Uri.TryCreate(address, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https" && !address.Any(char.IsControl);

    /// <summary>Whether <paramref name="address"/> is on the server the CLI talks to (same scheme, host and port).</summary>
    private static bool IsOn(string address, string server) =>
        Uri.TryCreate(address, UriKind.Absolute, out var a) && Uri.TryCreate(server, UriKind.Absolute, out var s)
        && Uri.Compare(a, s, UriComponents.SchemeAndServer, UriFormat.Unescaped, StringComparison.OrdinalIgnoreCase) == 0;

    private static CliException Expired(DeviceAuthorizationResponse start) =>
        new($"The code {start.UserCode} expired before it was approved. Run `portcullis login --web` again and approve it within {Math.Max(1, start.ExpiresIn / 60)} minutes.");

    private static Command Logout()
    {
        var command = new Command("logout", "Revoke the stored credential on the server, then forget it here.\n\nExample:\n  portcullis logout");
        command.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var config = new CredentialStore().Load();
            var context = config.Current is { } current ? config.Find(current) : null;
            if (context?.ApiToken is not { } token)
                throw new CliException("Not logged in: nothing to log out of.");
            // Revoked first: a credential that only disappears from this machine would still work for whoever copied it.
            await target.Client(context.Endpoint, null).RevokeAsync(token, cancellationToken);
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
        command.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var me = await target.Client().GetMeAsync(cancellationToken);
            Print(parse, new { username = me.Username, admin = me.Admin, endpoint = target.Url, auth = me.Auth },
                () => Console.WriteLine($"{me.Username}{(me.Admin ? " (admin)" : "")} on {target.Url}, with {Describe(me.Auth.Kind)} ({string.Join(' ', me.Auth.Scopes)})"));
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
}
