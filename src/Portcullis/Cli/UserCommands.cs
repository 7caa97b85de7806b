using System.CommandLine;
using System.Text.Json;
using static Portcullis.Cli.CommandSupport;

namespace Portcullis.Cli;

/// <summary><c>user</c>: users, for admins (docs/cli.md).</summary>
internal static class UserCommands
{
    public static IEnumerable<Command> All()
    {
        yield return User();
    }

    private static Command User()
    {
        var command = new Command("user", "Users (admin).\n\nExamples:\n  portcullis user list\n  echo \"$PASSWORD\" | portcullis user add bob --password-stdin\n  portcullis user disable bob");
        var list = new Command("list", "List users (admin).\n\nExample:\n  portcullis user list --json");
        list.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var users = await target.Client().ListUsersAsync(cancellationToken);
            Print(parse, users, () => Table(["USERNAME", "KIND", "ADMIN", "DISABLED"],
                users.Select(u => new[] { u.Username, u.Kind, u.Admin ? "yes" : "", u.Disabled ? "yes" : "" })));
        }));
        var name = new Argument<string>("USERNAME");
        var admin = new Option<bool>("--admin") { Description = "Make the user an administrator." };
        var passwordStdin = new Option<bool>("--password-stdin") { Description = "Read the password from standard input." };
        var add = new Command("add", "Create a user; the password is asked for (or read with --password-stdin).\n\nExample:\n  echo \"$PASSWORD\" | portcullis user add bob --password-stdin") { name, admin, passwordStdin };
        add.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var password = parse.GetValue(passwordStdin) ? ReadSecretLine("password") : Prompt("Password:", hidden: true);
            await target.Client().CreateUserAsync(new CreateUserRequest(parse.GetValue(name), password, parse.GetValue(admin)), cancellationToken);
            Print(parse, new { username = parse.GetValue(name), created = true }, () => Console.WriteLine($"Created user {parse.GetValue(name)}."));
        }));
        var disable = new Command("disable", "Disable a user: their tokens and sessions stop working at once.\n\nExample:\n  portcullis user disable bob") { name };
        disable.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            await target.Client().UpdateUserAsync(parse.GetValue(name)!, new UpdateUserRequest(Admin: null, Disabled: true, Password: null), cancellationToken);
            Print(parse, new { username = parse.GetValue(name), disabled = true }, () => Console.WriteLine($"Disabled {parse.GetValue(name)}."));
        }));
        var remove = new Command("remove", "Delete a user and their tokens.\n\nExample:\n  portcullis user remove bob") { name };
        remove.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            await target.Client().DeleteUserAsync(parse.GetValue(name)!, cancellationToken);
            Print(parse, new { username = parse.GetValue(name), removed = true }, () => Console.WriteLine($"Removed {parse.GetValue(name)}."));
        }));
        var passwd = new Command("passwd", "Set a user's password (asked for, or --password-stdin).\n\nExample:\n  portcullis user passwd bob") { name, passwordStdin };
        passwd.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var password = parse.GetValue(passwordStdin) ? ReadSecretLine("password") : Prompt("New password:", hidden: true);
            await target.Client().UpdateUserAsync(parse.GetValue(name)!, new UpdateUserRequest(Admin: null, Disabled: null, Password: password), cancellationToken);
            Print(parse, new { username = parse.GetValue(name), password_changed = true }, () => Console.WriteLine($"Changed the password of {parse.GetValue(name)}."));
        }));
        foreach (var c in new[] { list, add, disable, remove, passwd })
            command.Subcommands.Add(c);
        return command;
    }
}
