using System.CommandLine;
using System.Text.Json;
using static Portcullis.Cli.CommandSupport;

namespace Portcullis.Cli;

/// <summary><c>client</c>: OAuth clients (docs/cli.md).</summary>
internal static class OAuthClientCommands
{
    public static IEnumerable<Command> All()
    {
        yield return OAuthClient();
    }

    private static Command OAuthClient()
    {
        var command = new Command("client", "OAuth clients (client credentials).\n\nExamples:\n  portcullis client create deployer --scope services\n  portcullis client list\n  portcullis client rotate-secret CLIENT_ID");
        var name = new Argument<string>("NAME");
        var scope = new Option<string[]>("--scope") { Description = "Scopes of the client; repeat for several." };
        var create = new Command("create", "Create a client; prints its secret once.\n\nExample:\n  portcullis client create deployer --scope services:model") { name, scope };
        create.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var scopes = parse.GetValue(scope) is { Length: > 0 } s ? s : ["services"];
            var created = await target.Client().CreateClientAsync(new CreateClientRequest(parse.GetValue(name), scopes), cancellationToken);
            Print(parse, created, () =>
            {
                Console.WriteLine($"client_id:     {created.ClientId}");
                Console.WriteLine($"client_secret: {created.ClientSecret}  (shown only this once)");
            });
        }));
        var list = new Command("list", "List your clients (all of them for admins).\n\nExample:\n  portcullis client list --json");
        list.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var clients = await target.Client().ListClientsAsync(cancellationToken);
            Print(parse, clients, () => Table(["CLIENT ID", "NAME", "SCOPES", "OWNER", "SECRET"],
                clients.Select(c => new[] { c.ClientId, c.Name, string.Join(' ', c.Scopes), c.Owner, c.SecretHint })));
        }));
        var id = new Argument<string>("CLIENT_ID");
        var delete = new Command("delete", "Delete a client; its tokens stop working at once.\n\nExample:\n  portcullis client delete client-3k9x...") { id };
        delete.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            await target.Client().DeleteClientAsync(parse.GetValue(id)!, cancellationToken);
            Print(parse, new { client_id = parse.GetValue(id), deleted = true }, () => Console.WriteLine($"Deleted {parse.GetValue(id)}."));
        }));
        var rotate = new Command("rotate-secret", "Give a client a new secret; the old one and its tokens stop at once.\n\nExample:\n  portcullis client rotate-secret client-3k9x...") { id };
        rotate.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var result = await target.Client().RotateClientSecretAsync(parse.GetValue(id)!, cancellationToken);
            Print(parse, result, () => Console.WriteLine($"client_secret: {result.ClientSecret}  (shown only this once)"));
        }));
        foreach (var c in new[] { create, list, delete, rotate })
            command.Subcommands.Add(c);
        return command;
    }
}
