using System.CommandLine;
using static Portcullis.Cli.CommandSupport;

namespace Portcullis.Cli;

/// <summary><c>login</c>, <c>logout</c>, <c>whoami</c> (docs/cli.md).</summary>
internal static class LoginCommands
{
    public static IEnumerable<Command> All()
    {
        yield return Login();
        yield return Logout();
        yield return WhoAmI();
    }

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
        command.SetAction(Run(async (parse, target, cancellationToken) =>
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
                var me = await target.Client(url, credential).GetMeAsync(cancellationToken);
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
                credential = (await target.Client(url, null).LoginAsync(user, password, cli: true, cancellationToken)).Token;
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
