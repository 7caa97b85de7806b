using System.Data.Common;
using System.Security.Cryptography;
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

    public static async Task RunAsync(DbConnection connection, PasswordHasher hasher, AuditLog audit, TimeProvider time, CancellationToken cancellationToken)
    {
        if (await AdminExistsAsync(connection, cancellationToken))
            return;

        var configured = Environment.GetEnvironmentVariable(PasswordVariable);
        if (!string.IsNullOrEmpty(configured) && PasswordHasher.Validate(configured) is { } problem)
            throw new StartupException($"{PasswordVariable} is not a usable password: {problem}");
        var password = string.IsNullOrEmpty(configured) ? RandomNumberGenerator.GetString(TokenFormat.Alphabet, 24) : configured;
        var hash = await hasher.HashAsync(password, cancellationToken);
        var now = time.GetUtcNow().UtcDateTime;

        try
        {
            await CreateAsync(connection, hash, audit.Create(null, AuditEvents.AdminBootstrapped, AdminName,
                details: new { password_source = string.IsNullOrEmpty(configured) ? "generated" : PasswordVariable }), now, cancellationToken);
        }
        catch (DbException) when (connection.State == System.Data.ConnectionState.Open)
        {
            if (await AdminExistsAsync(connection, cancellationToken))
                return; // another instance bootstrapped at the same moment
            throw;
        }
        if (string.IsNullOrEmpty(configured))
        {
            // Deliberately to the console only, never through the logger: it is shown exactly once.
            Console.Out.WriteLine($"Initial admin password (shown once): {password}");
            Console.Out.Flush();
        }
    }

    private static async Task<bool> AdminExistsAsync(DbConnection connection, CancellationToken cancellationToken) =>
        Convert.ToInt64(await Sql.ScalarAsync(connection,
            "SELECT COUNT(*) FROM users WHERE is_admin = TRUE AND is_disabled = FALSE AND kind = 'user'", cancellationToken)) > 0;

    private static async Task CreateAsync(DbConnection connection, string hash, AuditEvent e, DateTime now, CancellationToken cancellationToken)
    {
        await using var tx = await connection.BeginTransactionAsync(cancellationToken);
        await using (var find = Sql.Command(connection, tx, "SELECT id, kind FROM users WHERE normalized_username = @name", ("@name", AdminName)))
        {
            await using var reader = await find.ExecuteReaderAsync(cancellationToken);
            if (await reader.ReadAsync(cancellationToken))
            {
                var (id, kind) = (reader.GetInt64(0), reader.GetString(1));
                await reader.DisposeAsync();
                if (kind != PrincipalKind.User)
                    throw new StartupException($"No admin user exists, and the name '{AdminName}' is taken by a service. Rename that service in the configuration.");
                await Run(tx, """
                    UPDATE users SET is_admin = TRUE, is_disabled = FALSE, password_hash = @hash,
                        credential_version = credential_version + 1, updated_at = @now WHERE id = @id
                    """, ("@hash", hash), ("@now", now), ("@id", id));
            }
            else
            {
                await reader.DisposeAsync();
                await Run(tx, """
                    INSERT INTO users (username, normalized_username, kind, password_hash, is_admin, is_disabled, credential_version, created_at, updated_at)
                    VALUES (@name, @name, 'user', @hash, TRUE, FALSE, 1, @now, @now)
                    """, ("@name", AdminName), ("@hash", hash), ("@now", now));
            }
        }
        await Run(tx, "INSERT INTO audit_events (occurred_at, event, subject, details) VALUES (@at, @event, @subject, @details)",
            ("@at", e.OccurredAt), ("@event", e.Event), ("@subject", e.Subject), ("@details", e.Details));
        await tx.CommitAsync(cancellationToken);

        Task Run(DbTransaction transaction, string sql, params (string, object?)[] parameters) => Sql.ExecuteAsync(connection, transaction, sql, cancellationToken, parameters);
    }
}
