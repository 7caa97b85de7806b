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
            var created = (await target.Client().SendJsonAsync(HttpMethod.Post, "api/v1/clients", new { name = parse.GetValue(name), scopes }, cancellationToken))!.Value;
            Print(parse, created, () =>
            {
                Console.WriteLine($"client_id:     {created.GetProperty("client_id").GetString()}");
                Console.WriteLine($"client_secret: {created.GetProperty("client_secret").GetString()}  (shown only this once)");
            });
        }));
        var list = new Command("list", "List your clients (all of them for admins).\n\nExample:\n  portcullis client list --json");
        list.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var clients = (await target.Client().SendJsonAsync(HttpMethod.Get, "api/v1/clients", null, cancellationToken))!.Value;
            Print(parse, clients, () => Table(["CLIENT ID", "NAME", "SCOPES", "OWNER", "SECRET"], clients.EnumerateArray().Select(c => new[]
                { c.GetProperty("client_id").GetString()!, c.GetProperty("name").GetString()!, string.Join(' ', c.GetProperty("scopes").EnumerateArray().Select(x => x.GetString())),
                  c.GetProperty("owner").GetString()!, c.GetProperty("secret_hint").GetString()! })));
        }));
        var id = new Argument<string>("CLIENT_ID");
        var delete = new Command("delete", "Delete a client; its tokens stop working at once.\n\nExample:\n  portcullis client delete client-3k9x...") { id };
        delete.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            await target.Client().SendJsonAsync(HttpMethod.Delete, $"api/v1/clients/{Uri.EscapeDataString(parse.GetValue(id)!)}", null, cancellationToken);
            Print(parse, new { client_id = parse.GetValue(id), deleted = true }, () => Console.WriteLine($"Deleted {parse.GetValue(id)}."));
        }));
        var rotate = new Command("rotate-secret", "Give a client a new secret; the old one and its tokens stop at once.\n\nExample:\n  portcullis client rotate-secret client-3k9x...") { id };
        rotate.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var result = (await target.Client().SendJsonAsync(HttpMethod.Post, $"api/v1/clients/{Uri.EscapeDataString(parse.GetValue(id)!)}/rotate-secret", null, cancellationToken))!.Value;
            Print(parse, result, () => Console.WriteLine($"client_secret: {result.GetProperty("client_secret").GetString()}  (shown only this once)"));
        }));
        foreach (var c in new[] { create, list, delete, rotate })
            command.Subcommands.Add(c);
        return command;
    }
}
