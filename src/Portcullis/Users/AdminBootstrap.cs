using System.Security.Cryptography;
using Microsoft.EntityFrameworkCore;
using Portcullis.Audit;
using Portcullis.Data;
using Portcullis.Security;

namespace Portcullis.Users;

/// <summary>
/// First start: when no active admin exists, create user <c>admin</c> with the password from
/// <c>PORTCULLIS_ADMIN_PASSWORD</c>, or generate one and print it once. There is never a default password.
/// </summary>
internal static class AdminBootstrap
{
    public const string AdminName = "admin";
    public const string PasswordVariable = "PORTCULLIS_ADMIN_PASSWORD";

    public static async Task RunAsync(IServiceProvider services, CancellationToken cancellationToken)
    {
        await using var scope = services.CreateAsyncScope();
        var db = scope.ServiceProvider.GetRequiredService<PortcullisDb>();
        if (await db.Users.AnyAsync(u => u.IsAdmin && !u.IsDisabled && u.Kind == PrincipalKind.User, cancellationToken))
            return;

        var configured = Environment.GetEnvironmentVariable(PasswordVariable);
        if (!string.IsNullOrEmpty(configured) && PasswordHasher.Validate(configured) is { } problem)
            throw new StartupException($"{PasswordVariable} is not a usable password: {problem}");
        var password = string.IsNullOrEmpty(configured) ? RandomNumberGenerator.GetString(TokenFormat.Alphabet, 24) : configured;

        var hasher = scope.ServiceProvider.GetRequiredService<PasswordHasher>();
        var audit = scope.ServiceProvider.GetRequiredService<AuditLog>();
        var now = scope.ServiceProvider.GetRequiredService<TimeProvider>().GetUtcNow().UtcDateTime;
        var existing = await db.Users.FirstOrDefaultAsync(u => u.NormalizedUsername == AdminName, cancellationToken);
        if (existing is not null && existing.Kind != PrincipalKind.User)
            throw new StartupException($"No admin user exists, and the name '{AdminName}' is taken by a service. Rename that service in the configuration.");
        var admin = existing ?? new User { Username = AdminName, NormalizedUsername = AdminName, Kind = PrincipalKind.User, CreatedAt = now };
        admin.IsAdmin = true;
        admin.IsDisabled = false;
        admin.PasswordHash = await hasher.HashAsync(password, cancellationToken);
        admin.CredentialVersion++;
        admin.UpdatedAt = now;
        if (existing is null)
            db.Users.Add(admin);
        db.AuditEvents.Add(audit.Create(null, AuditEvents.AdminBootstrapped, AdminName,
            details: new { password_source = string.IsNullOrEmpty(configured) ? "generated" : PasswordVariable }));
        try
        {
            await db.SaveChangesAsync(cancellationToken);
        }
        catch (DbUpdateException) when (existing is null)
        {
            return; // another instance bootstrapped at the same moment
        }
        if (string.IsNullOrEmpty(configured))
        {
            // Deliberately to the console only, never through the logger: it is shown exactly once.
            Console.Out.WriteLine($"Initial admin password (shown once): {password}");
            Console.Out.Flush();
        }
    }
}
