using System.CommandLine;
using Microsoft.Extensions.Options;
using Portcullis.Data;
using Portcullis.Hosting;

namespace Portcullis.Cli;

/// <summary>The <c>portcullis</c> command line. Exit codes: 0 success, 1 failure, 2 usage error.</summary>
internal static class CliApp
{
    public static async Task<int> RunAsync(string[] args)
    {
        var root = new RootCommand("Portcullis: API tokens and an authentication gateway for internal services.");
        root.Subcommands.Add(ServeCommand());
        // Server-side: they act on the database of the machine they run on, with serve's configuration.
        foreach (var command in AdminCommands.All().Concat(DatabaseCommands.All()))
            root.Subcommands.Add(command);
        root.Options.Add(CommandSupport.JsonOption);
        // The client commands of docs/cli.md, one file per group; each talks to a server through Portcullis.Client.
        IEnumerable<Command>[] groups =
        [
            LoginCommands.All(), TokenCommands.All(), ContextCommands.All(), KeyCommands.All(), ScanCommand.All(),
            ServiceCommands.All(), UserCommands.All(), OAuthClientCommands.All(), WebhookCommands.All(),
        ];
        foreach (var command in groups.SelectMany(g => g))
            root.Subcommands.Add(command);
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var error in parse.Errors)
                Console.Error.WriteLine($"error: {error.Message}");
            Console.Error.WriteLine("Run 'portcullis --help' for usage.");
            return 2;
        }
        // `serve` leaves SIGTERM/SIGINT to the ASP.NET Core host, whose graceful stop (usage and audit flushed,
        // managed services given SIGTERM then SIGKILL) must not be cut short by System.CommandLine's 2 s limit.
        var invocation = parse.CommandResult.Command.Name == "serve" ? new InvocationConfiguration { ProcessTerminationTimeout = null } : new InvocationConfiguration();
        return await parse.InvokeAsync(invocation);
    }

    private static Command ServeCommand()
    {
        var urls = new Option<string?>("--urls") { Description = $"Addresses to listen on, ';'-separated (default {ServerApp.DefaultUrl})." };
        var dataDir = new Option<string?>("--data-dir") { Description = "Data directory (default ./portcullis-data or $PORTCULLIS_DATA_DIR)." };
        var config = new Option<string?>("--config") { Description = "Configuration file (default ./portcullis.json if present)." };
        var serve = new Command("serve", "Run the Portcullis server.") { urls, dataDir, config };
        // Unknown --Section:Key=value options are configuration overrides, as in any ASP.NET Core app.
        serve.TreatUnmatchedTokensAsErrors = false;
        serve.SetAction(async (result, cancellationToken) =>
        {
            var forwarded = result.Tokens.Select(t => t.Value).SkipWhile(t => t == "serve").ToArray();
            return await ServeAsync(forwarded, cancellationToken);
        });
        return serve;
    }

    internal static async Task<int> ServeAsync(string[] args, CancellationToken cancellationToken)
    {
        WebApplication app;
        try
        {
            app = ServerApp.Build(args);
        }
        catch (Exception e) when (e is StartupException or OptionsValidationException or InvalidOperationException)
        {
            return CannotStart(e);
        }
        try
        {
            await Startup.StartAsync(app, cancellationToken);
        }
        catch (Exception e) when (e is StartupException or OptionsValidationException or InvalidOperationException
                                  || e is IOException && e.Message.Contains("address", StringComparison.OrdinalIgnoreCase))
        {
            // Stop listening and let requests under way (health probes during start-up) finish while the
            // services they use are still there; disposing at once would fail them with stack traces.
            using (var drain = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
            {
                try
                {
                    await app.StopAsync(drain.Token);
                }
                // A host that failed while building its background services has none to stop, and says so with an ArgumentNullException.
                catch (Exception stop) when (stop is OperationCanceledException or InvalidOperationException or ArgumentNullException)
                {
                }
            }
            await app.DisposeAsync();
            return CannotStart(e);
        }
        await app.WaitForShutdownAsync(cancellationToken);
        await app.DisposeAsync();
        return 0;
    }

    private static int CannotStart(Exception e)
    {
        Console.Error.WriteLine("portcullis: cannot start.");
        foreach (var line in Describe(e))
            Console.Error.WriteLine($"  - {line}");
        if (e is IOException)
            Console.Error.WriteLine("  Choose another address with --urls.");
        return 1;
    }

    private static IEnumerable<string> Describe(Exception e) => e switch
    {
        OptionsValidationException o => o.Failures,
        { InnerException: OptionsValidationException o } => o.Failures,
        _ => e.Message.Split('\n'),
    };
}
