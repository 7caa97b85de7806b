using Microsoft.EntityFrameworkCore;
using Portcullis.Audit;
using Portcullis.Data;
using Portcullis.Security;
using Portcullis.Users;

namespace Portcullis.Auth;

/// <summary>A username and password checked the same way on every login path: the token endpoint, the web form, Daeploy's login.</summary>
internal static class PasswordLogin
{
    /// <summary>
    /// The password check of every login path (API, CLI, web): the user, or null for an unknown user, a wrong
    /// password or a disabled account, which all answer the same. Unknown users go through a dummy hash too, so
    /// neither the answer nor its timing tells whether the user exists. Records the attempt with the throttle
    /// and, on failure, the audit event (<paramref name="path"/> says which way the login came).
    /// </summary>
    public static async Task<User?> CheckAsync(HttpContext http, PortcullisDb db, PasswordHasher hasher, AuditLog audit, LoginAttempt attempt,
        string username, string password, string path)
    {
        var normalized = User.Normalize(username);
        var user = username.Length <= 64
            ? await db.Users.FirstOrDefaultAsync(u => u.NormalizedUsername == normalized && u.Kind == PrincipalKind.User, http.RequestAborted)
            : null;
        var check = await hasher.VerifyAsync(user?.PasswordHash, password.Length <= PasswordHasher.MaxLength ? password : "", http.RequestAborted);
        if (check == PasswordCheck.Failed || user is null || user.IsDisabled)
        {
            await attempt.RecordFailureAsync();
            db.AuditEvents.Add(audit.Create(http, AuditEvents.LoginFailed, username.Length <= 64 ? username : username[..64] + "…", user?.Id,
                details: new { path, reason = user is null ? "unknown user" : user.IsDisabled && check != PasswordCheck.Failed ? "disabled" : "wrong password" }));
            await db.SaveChangesAsync(http.RequestAborted);
            return null;
        }
        await attempt.RecordSuccessAsync();
        if (check == PasswordCheck.SuccessRehashNeeded)
            user.PasswordHash = await hasher.HashAsync(password, http.RequestAborted);
        return user;
    }
}
