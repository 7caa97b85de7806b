using System.CommandLine;
using System.Text.Json;
using static Portcullis.Cli.CommandSupport;

namespace Portcullis.Cli;

/// <summary><c>keys</c>: JWT signing keys (docs/cli.md).</summary>
internal static class KeyCommands
{
    public static IEnumerable<Command> All()
    {
        yield return Keys();
    }

    private static Command Keys()
    {
        var rotate = new Command("rotate", "Make a new JWT signing key; tokens of the old one keep working until they expire (admin).\n\nExample:\n  portcullis keys rotate");
        rotate.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var result = await target.Client().RotateSigningKeyAsync(cancellationToken);
            Print(parse, result, () => Console.WriteLine($"New signing key {result.Kid}."));
        }));
        var command = new Command("keys", "JWT signing keys.\n\nExample:\n  portcullis keys rotate");
        command.Subcommands.Add(rotate);
        return command;
    }
}
