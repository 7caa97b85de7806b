using System.CommandLine;
using static Portcullis.Cli.CommandSupport;

namespace Portcullis.Cli;

/// <summary><c>context</c>: the servers this machine is logged in to (docs/cli.md).</summary>
internal static class ContextCommands
{
    public static IEnumerable<Command> All()
    {
        yield return Context();
    }

    private static Command Context()
    {
        var command = new Command("context", "The servers you are logged in to; one is current.\n\nExamples:\n  portcullis context list\n  portcullis context use auth.example.com\n  portcullis context current --json");
        var list = new Command("list", "List the stored contexts; * marks the current one.\n\nExample:\n  portcullis context list --json");
        list.SetAction(Run((parse, _, _) =>
        {
            var config = new CredentialStore().Load();
            Print(parse, config.Contexts.Select(c => new { c.Name, c.Endpoint, c.Username, current = c.Name == config.Current }),
                () => Table(["", "NAME", "ENDPOINT", "USERNAME"], config.Contexts.Select(c => new[] { c.Name == config.Current ? "*" : "", c.Name, c.Endpoint, c.Username ?? "" })));
            return Task.CompletedTask;
        }));
        var name = new Argument<string>("NAME");
        var use = new Command("use", "Make a context current.\n\nExample:\n  portcullis context use auth.example.com") { name };
        use.SetAction(Run((parse, _, _) =>
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
        current.SetAction(Run((parse, target, _) =>
        {
            var (url, token, context) = target.Resolve(needToken: false);
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
}
