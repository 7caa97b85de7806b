using System.CommandLine;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Users;

namespace Portcullis.Cli;

/// <summary>
/// <c>admin</c>: recovering an installation on the machine that runs it, without the HTTP API (docs/operations.md,
/// "I lost the admin password"). These commands read the configuration <c>serve</c> reads and change the database
/// directly: on SQLite only while no server holds the data directory; on PostgreSQL while the instances run, which
/// hear of the change at once.
/// </summary>
internal static class AdminCommands
{
    public static IEnumerable<Command> All()
    {
        yield return Admin();
    }

    private static Command Admin()
    {
        var command = new Command("admin",
            "Recover an installation on its own machine, without the HTTP API.\n\nExamples:\n  portcullis admin reset-password admin\n  portcullis admin create rescuer --admin --password-stdin < password.txt");
        var user = new Argument<string>("USER");
        var stdin = new Option<bool>("--password-stdin") { Description = "Read the new password from standard input instead of a prompt." };
        var dataDir = ServerSide.DataDirOption();
        var config = ServerSide.ConfigOption();

        var reset = new Command("reset-password",
            "Set a user's password; their sessions and the access tokens issued to them end.\n\nExample:\n  portcullis admin reset-password admin --data-dir /var/lib/portcullis")
            { user, stdin, dataDir, config };
        reset.TreatUnmatchedTokensAsErrors = false;
        reset.SetAction((parse, cancellationToken) => ServerSide.RunAsync(parse, dataDir, config, ServerSide.Access.Exclusive, cancellationToken, async (target, ct) =>
        {
            var name = parse.GetValue(user)!;
            await using var db = await target.Services.GetRequiredService<IDbContextFactory<PortcullisDb>>().CreateDbContextAsync(ct);
            var normalized = User.Normalize(name);
            var row = await db.Users.FirstOrDefaultAsync(u => u.NormalizedUsername == normalized, ct);
            if (row is null)
                throw new CliException($"There is no user '{name}'. Create one with: portcullis admin create {name} --admin");
            if (row.Kind != PrincipalKind.User)
                throw new CliException($"'{row.Username}' is a service; services have tokens, not passwords.");
            var password = ReadPassword(parse.GetValue(stdin));
            row.PasswordHash = await target.Services.GetRequiredService<PasswordHasher>().HashAsync(password, ct);
            row.CredentialVersion++;
            row.UpdatedAt = target.Services.GetRequiredService<TimeProvider>().GetUtcNow().UtcDateTime;
            db.AuditEvents.Add(Audited(target, AuditEvents.PasswordChanged, row, new { changes = new[] { "password reset" }, via = "portcullis admin reset-password" }));
            await db.SaveChangesAsync(ct);
            await target.Services.GetRequiredService<InvalidationBus>().PrincipalChangedAsync(row.Id, ct);
            Console.WriteLine($"Set a new password for {row.Username}. Their web sessions and the access tokens issued to them have ended; their API tokens still work.");
        }));

        var admin = new Option<bool>("--admin") { Description = "Make the user an admin." };
        var create = new Command("create", "Create a user with a password.\n\nExample:\n  portcullis admin create rescuer --admin")
            { user, admin, stdin, dataDir, config };
        create.TreatUnmatchedTokensAsErrors = false;
        create.SetAction((parse, cancellationToken) => ServerSide.RunAsync(parse, dataDir, config, ServerSide.Access.Exclusive, cancellationToken, async (target, ct) =>
        {
            var name = parse.GetValue(user)!;
            if (UsersApi.ValidateUsername(name) is { } invalid)
                throw new CliException(invalid, 2);
            await using var db = await target.Services.GetRequiredService<IDbContextFactory<PortcullisDb>>().CreateDbContextAsync(ct);
            var normalized = User.Normalize(name);
            if (await db.Users.AnyAsync(u => u.NormalizedUsername == normalized, ct))
                throw new CliException($"'{name}' exists already. To get in with it, run: portcullis admin reset-password {name}");
            var password = ReadPassword(parse.GetValue(stdin));
            var now = target.Services.GetRequiredService<TimeProvider>().GetUtcNow().UtcDateTime;
            var row = new User
            {
                Username = name, NormalizedUsername = normalized, Kind = PrincipalKind.User, IsAdmin = parse.GetValue(admin),
                PasswordHash = await target.Services.GetRequiredService<PasswordHasher>().HashAsync(password, ct), CreatedAt = now, UpdatedAt = now,
            };
            db.Users.Add(row);
            await db.SaveChangesAsync(ct);
            db.AuditEvents.Add(Audited(target, AuditEvents.UserCreated, row, new { admin = row.IsAdmin, via = "portcullis admin create" }));
            await db.SaveChangesAsync(ct);
            Console.WriteLine($"Created {(row.IsAdmin ? "admin" : "user")} {row.Username}.");
        }));

        command.Subcommands.Add(reset);
        command.Subcommands.Add(create);
        return command;
    }

    /// <summary>Who did it, as far as the machine knows: the operating-system account that ran the command.</summary>
    private static AuditEvent Audited(ServerSide.Target target, string name, User subject, object details)
    {
        var e = target.Services.GetRequiredService<AuditLog>().Create(null, name, subject.Username, subject.Id, details: details);
        e.Actor = $"{Environment.UserName}@{Environment.MachineName} (command line)";
        return e;
    }

    /// <summary>A new password: from standard input, or typed twice without echo at a terminal.</summary>
    private static string ReadPassword(bool fromStdin)
    {
        string password;
        if (fromStdin)
            password = (Console.In.ReadLine() ?? "").TrimEnd('\r');
        else
        {
            if (Console.IsInputRedirected)
                throw new CliException("Standard input is not a terminal: pass the password with --password-stdin.", 2);
            password = Prompt("New password: ");
            if (Prompt("Again: ") != password)
                throw new CliException("The two passwords differ.", 2);
        }
        if (PasswordHasher.Validate(password) is { } problem)
            throw new CliException(problem, 2);
        return password;
    }

    private static string Prompt(string label)
    {
        Console.Error.Write(label);
        var typed = new System.Text.StringBuilder();
        while (Console.ReadKey(intercept: true) is var key && key.Key != ConsoleKey.Enter)
        {
            if (key.Key == ConsoleKey.Backspace && typed.Length > 0)
                typed.Length--;
            else if (!char.IsControl(key.KeyChar))
                typed.Append(key.KeyChar);
        }
        Console.Error.WriteLine();
        return typed.ToString();
    }
}
