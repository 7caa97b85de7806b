using System.CommandLine;
using System.Text.Json;
using static Portcullis.Cli.CommandSupport;

namespace Portcullis.Cli;

/// <summary><c>service</c>: the services behind the gateway (docs/cli.md).</summary>
internal static class ServiceCommands
{
    public static IEnumerable<Command> All()
    {
        yield return Service();
    }

    private static Command Service()
    {
        var command = new Command("service", "Services behind the gateway.\n\nExamples:\n  portcullis service list\n  portcullis service add model 1.0 http://127.0.0.1:5000\n  portcullis service add model 2.0 http://10.0.0.5:5000 http://10.0.0.6:5000 --health-check /healthz\n  portcullis service remove model 1.0");
        var list = new Command("list", "The services you may reach (admins also see each replica and its health).\n\nExample:\n  portcullis service list --json");
        list.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var services = await target.Client().ListServicesAsync(cancellationToken);
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
        add.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var addresses = parse.GetValue(upstreams)!;
            var health = parse.GetValue(healthCheck) is { } path ? new HealthCheckRequest(path, parse.GetValue(healthInterval)) : null;
            var created = await target.Client().RegisterServiceAsync(new RegisterServiceRequest(parse.GetValue(name), parse.GetValue(version), Upstream: null, addresses,
                Protected: !parse.GetValue(unprotected), Description: null, health), cancellationToken);
            Print(parse, created, () => Console.WriteLine(
                $"Registered {parse.GetValue(name)} {parse.GetValue(version)} ({addresses.Length} upstream{(addresses.Length == 1 ? "" : "s")}): browsers use {created.Origin}, programs {created.Path}"));
        }));
        var remove = new Command("remove", "Remove a service registered through the API (admin).\n\nExample:\n  portcullis service remove model 1.0") { name, version };
        remove.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            await target.Client().RemoveServiceAsync(parse.GetValue(name)!, parse.GetValue(version)!, cancellationToken);
            Print(parse, new { removed = true }, () => Console.WriteLine($"Removed {parse.GetValue(name)} {parse.GetValue(version)}."));
        }));
        command.Subcommands.Add(list);
        command.Subcommands.Add(add);
        command.Subcommands.Add(remove);
        return command;
    }
}
