using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.EntityFrameworkCore;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;

namespace Portcullis.Users;

internal sealed record ChangePasswordRequest(string? CurrentPassword, string? NewPassword);

/// <summary>The API's user record (Portcullis.Client/ApiRecords.cs) made from what the database holds.</summary>
internal static class UserRecords
{
    extension(UserResponse)
    {
        public static UserResponse From(User u) => new(u.Username, u.Kind, u.IsAdmin, u.IsDisabled, u.CreatedAt, u.UpdatedAt, u.Source);
    }
}

/// <summary>Users (admin) at <c>/api/v1/users</c>, and <c>/api/v1/me</c> for everyone (docs/decisions.md).</summary>
internal static partial class UsersApi
{
    /// <summary>The longest username; the pattern below says the same.</summary>
    public const int MaxUsernameLength = 64;

    public static RouteGroupBuilder MapUsers(this RouteGroupBuilder api)
    {
        var users = api.MapGroup("/users").WithTags("Users").RequireAuthorization(Policies.Admin);
        users.MapGet("/", ListAsync);
        users.MapPost("/", CreateAsync).NotForClientCredentials().NotForFencedTokens()
            .Answers((StatusCodes.Status409Conflict, "A user or service of that name exists."));
        users.MapGet("/{name}", GetAsync);
        users.MapPatch("/{name}", UpdateAsync).NotForClientCredentials().NotForFencedTokens();
        users.MapDelete("/{name}", DeleteAsync).NotForClientCredentials();
        return users;
    }

    public static RouteGroupBuilder MapMe(this RouteGroupBuilder api)
    {
        var me = api.MapGroup("/me").WithTags("Me");
        // Any valid credential may ask who it is, even one without the 'api' scope.
        me.MapGet("/", GetMe).RequireAuthorization(Policies.Authenticated);
        me.MapPost("/password", ChangePasswordAsync).RequireAuthorization(Policies.Api).NotForClientCredentials().NotForFencedTokens()
            .Answers((StatusCodes.Status429TooManyRequests, "Too many wrong current passwords for this user or from this address; see Retry-After."));
        return me;
    }

    private static Ok<MeResponse> GetMe(HttpContext http)
    {
        var c = http.Credential();
        return TypedResults.Ok(new MeResponse(c.Owner.Name, c.Owner.IsAdmin && !c.Owner.IsDisabled,
            new MeAuth(c.Kind, c.TokenId, c.Effective.ToNames().ToArray(), c.ClientId)));
    }

    private static async Task<Ok<UserResponse[]>> ListAsync(PortcullisDb db, CancellationToken cancellationToken) =>
        TypedResults.Ok(await ListAllAsync(db, cancellationToken));

    /// <summary>Every user and service, by name.</summary>
    internal static async Task<UserResponse[]> ListAllAsync(PortcullisDb db, CancellationToken cancellationToken) =>
        (await db.Users.AsNoTracking().OrderBy(u => u.NormalizedUsername).ToListAsync(cancellationToken)).Select(UserResponse.From).ToArray();

    private static async Task<Results<Ok<UserResponse>, ProblemHttpResult>> GetAsync(string name, PortcullisDb db, CancellationToken cancellationToken)
    {
        var user = await FindAsync(db, name, cancellationToken, tracked: false);
        return user is null ? NotFound(name) : TypedResults.Ok(UserResponse.From(user));
    }

    private static async Task<Results<Created<UserResponse>, ProblemHttpResult>> CreateAsync(
        CreateUserRequest? request, HttpContext http, PortcullisDb db, PasswordHasher hasher, AuditLog audit, TimeProvider time,
        CancellationToken cancellationToken)
    {
        if (request is null)
            return ProblemResponses.BadRequest("Send a JSON body such as {\"username\": \"alice\", \"password\": \"...\", \"admin\": false}.");
        var (user, error) = await CreateUserAsync(request, http, db, hasher, audit, time, cancellationToken);
        return error is null ? TypedResults.Created($"/api/v1/users/{user!.Username}", user) : error.ToProblem();
    }

    /// <summary>Creates a person's account with a password (docs/decisions.md, "Users"), audited. The API and the web UI both come here.</summary>
    internal static async Task<Checked<UserResponse>> CreateUserAsync(
        CreateUserRequest request, HttpContext http, PortcullisDb db, PasswordHasher hasher, AuditLog audit, TimeProvider time,
        CancellationToken cancellationToken)
    {
        if (ValidateUsername(request.Username) is { } usernameError)
            return new RuleError("username", usernameError);
        if (PasswordHasher.Validate(request.Password) is { } passwordError)
            return new RuleError("password", passwordError);
        var normalized = User.Normalize(request.Username!);
        if (await db.Users.AnyAsync(u => u.NormalizedUsername == normalized, cancellationToken))
            return NameTaken(request.Username!);

        var now = time.GetUtcNow().UtcDateTime;
        var user = new User
        {
            Username = request.Username!,
            NormalizedUsername = normalized,
            Kind = PrincipalKind.User,
            PasswordHash = await hasher.HashAsync(request.Password!, cancellationToken),
            IsAdmin = request.Admin ?? false,
            CreatedAt = now,
            UpdatedAt = now,
        };
        await using var tx = await db.Database.BeginTransactionAsync(cancellationToken);
        db.Users.Add(user);
        try
        {
            await db.SaveChangesAsync(cancellationToken);
        }
        catch (DbUpdateException)
        {
            return NameTaken(request.Username!);
        }
        db.AuditEvents.Add(audit.Create(http, AuditEvents.UserCreated, user.Username, user.Id, details: new { admin = user.IsAdmin }));
        await db.SaveChangesAsync(cancellationToken);
        await tx.CommitAsync(cancellationToken);
        return UserResponse.From(user);
    }

    private static RuleError NameTaken(string name) => RuleError.Conflict("username", $"The name '{name}' is already taken by a user or service.");

    private static async Task<Results<Ok<UserResponse>, ProblemHttpResult>> UpdateAsync(
        string name, UpdateUserRequest? request, HttpContext http, PortcullisDb db, PasswordHasher hasher, AuditLog audit,
        InvalidationBus invalidation, TimeProvider time, CancellationToken cancellationToken)
    {
        if (request is null)
            return ProblemResponses.BadRequest("Send a JSON body with any of 'admin', 'disabled', 'password'.");
        var (user, error) = await UpdateUserAsync(name, request, http, db, hasher, audit, invalidation, time, cancellationToken);
        return error is null ? TypedResults.Ok(user) : error.ToProblem();
    }

    /// <summary>Grants or removes admin, disables or enables, or resets the password of <paramref name="name"/>, audited; never the last active admin away.</summary>
    internal static async Task<Checked<UserResponse>> UpdateUserAsync(
        string name, UpdateUserRequest request, HttpContext http, PortcullisDb db, PasswordHasher hasher, AuditLog audit,
        InvalidationBus invalidation, TimeProvider time, CancellationToken cancellationToken)
    {
        var user = await FindAsync(db, name, cancellationToken, tracked: true);
        if (user is null)
            return new RuleError("username", NotFoundText(name), StatusCodes.Status404NotFound);
        if (request.Password is not null)
        {
            if (user.Kind != PrincipalKind.User)
                return new RuleError("password", $"'{user.Username}' is a service; services have tokens, not passwords.");
            if (PasswordHasher.Validate(request.Password) is { } passwordError)
                return new RuleError("password", passwordError);
        }
        var losesAdmin = user.IsAdmin && !user.IsDisabled && (request.Admin == false || request.Disabled == true);
        if (losesAdmin && user.Kind == PrincipalKind.User && !await OtherActiveAdminExistsAsync(db, user.Id, cancellationToken))
            return RuleError.Conflict(request.Admin == false ? "admin" : "disabled", $"'{user.Username}' is the last active admin; make another user admin first.");

        var changes = new List<string>();
        if (request.Admin is { } admin && admin != user.IsAdmin)
        {
            user.IsAdmin = admin;
            changes.Add(admin ? "admin granted" : "admin removed");
        }
        if (request.Disabled is { } disabled && disabled != user.IsDisabled)
        {
            user.IsDisabled = disabled;
            changes.Add(disabled ? "disabled" : "enabled");
            if (disabled)
                user.CredentialVersion++; // access tokens issued before stay dead even if re-enabled
        }
        if (request.Password is not null)
        {
            user.PasswordHash = await hasher.HashAsync(request.Password, cancellationToken);
            user.CredentialVersion++;
            changes.Add("password reset");
        }
        if (changes.Count == 0)
            return UserResponse.From(user);
        user.UpdatedAt = time.GetUtcNow().UtcDateTime;
        db.AuditEvents.Add(audit.Create(http, request.Password is not null && changes.Count == 1 ? AuditEvents.PasswordChanged : AuditEvents.UserUpdated,
            user.Username, user.Id, details: new { changes }));
        await db.SaveChangesAsync(cancellationToken);
        await invalidation.PrincipalChangedAsync(user.Id, cancellationToken);
        return UserResponse.From(user);
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> DeleteAsync(
        string name, HttpContext http, PortcullisDb db, AuditLog audit, InvalidationBus invalidation, CancellationToken cancellationToken)
    {
        var user = await FindAsync(db, name, cancellationToken, tracked: true);
        if (user is null)
            return NotFound(name);
        if (user.Kind != PrincipalKind.User)
            return ProblemResponses.BadRequest($"'{user.Username}' is a configured service; remove it from the configuration instead.");
        if (user.IsAdmin && !user.IsDisabled && !await OtherActiveAdminExistsAsync(db, user.Id, cancellationToken))
            return ProblemResponses.Conflict($"'{user.Username}' is the last active admin and cannot be deleted.");
        var hashes = await db.ApiTokens.Where(t => t.OwnerId == user.Id).Select(t => t.TokenHash).ToListAsync(cancellationToken);
        db.Users.Remove(user);
        db.AuditEvents.Add(audit.Create(http, AuditEvents.UserDeleted, user.Username, user.Id, details: new { tokens_deleted = hashes.Count }));
        await db.SaveChangesAsync(cancellationToken);
        await invalidation.PrincipalChangedAsync(user.Id, cancellationToken);
        foreach (var hash in hashes)
            await invalidation.TokenChangedAsync(hash, cancellationToken);
        return TypedResults.NoContent();
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> ChangePasswordAsync(
        ChangePasswordRequest? request, HttpContext http, PortcullisDb db, PasswordHasher hasher, LoginThrottle throttle, AuditLog audit,
        InvalidationBus invalidation, TimeProvider time, CancellationToken cancellationToken)
    {
        if (request is null || request.CurrentPassword is null)
            return ProblemResponses.BadRequest("Send {\"current_password\": \"...\", \"new_password\": \"...\"}.");
        if (PasswordHasher.Validate(request.NewPassword) is { } passwordError)
            return ProblemResponses.BadRequest(passwordError);
        var caller = http.Credential();
        var user = await db.Users.FirstOrDefaultAsync(u => u.Id == caller.Owner.Id, cancellationToken);
        if (user is null || user.Kind != PrincipalKind.User)
            return ProblemResponses.BadRequest("Only users have passwords.");
        // The current password is a password check like a login: it shares the user's and the address's counters,
        // so a stolen token cannot be used to guess the password.
        await using var attempt = await throttle.CheckAsync(LoginKind.Password, user.Username, http, cancellationToken);
        if (attempt.IsThrottled)
            return ProblemResponses.Problem(StatusCodes.Status429TooManyRequests, "Too many requests", attempt.RefuseWith429(http.Response));
        if (await hasher.VerifyAsync(user.PasswordHash, request.CurrentPassword, cancellationToken) == PasswordCheck.Failed)
        {
            await attempt.RecordFailureAsync();
            db.AuditEvents.Add(audit.Create(http, AuditEvents.PasswordChanged, user.Username, user.Id, details: new { success = false, reason = "wrong current password" }));
            await db.SaveChangesAsync(cancellationToken);
            return ProblemResponses.BadRequest("The current password is wrong.");
        }
        await attempt.RecordSuccessAsync();
        user.PasswordHash = await hasher.HashAsync(request.NewPassword!, cancellationToken);
        user.CredentialVersion++;
        user.UpdatedAt = time.GetUtcNow().UtcDateTime;
        db.AuditEvents.Add(audit.Create(http, AuditEvents.PasswordChanged, user.Username, user.Id, details: new { success = true }));
        await db.SaveChangesAsync(cancellationToken);
        await invalidation.PrincipalChangedAsync(user.Id, cancellationToken);
        return TypedResults.NoContent();
    }

    internal static string? ValidateUsername(string? username) =>
        username is null || !UsernameRegex().IsMatch(username)
            ? $"A username is 1 to {MaxUsernameLength} characters of letters, digits, '.', '_' and '-'."
            : null;

    private static Task<User?> FindAsync(PortcullisDb db, string name, CancellationToken cancellationToken, bool tracked)
    {
        var normalized = User.Normalize(name);
        var users = tracked ? db.Users : db.Users.AsNoTracking();
        return users.FirstOrDefaultAsync(u => u.NormalizedUsername == normalized, cancellationToken);
    }

    private static Task<bool> OtherActiveAdminExistsAsync(PortcullisDb db, long exceptId, CancellationToken cancellationToken) =>
        db.Users.AnyAsync(u => u.Id != exceptId && u.Kind == PrincipalKind.User && u.IsAdmin && !u.IsDisabled, cancellationToken);

    private static ProblemHttpResult NotFound(string name) => ProblemResponses.NotFound(NotFoundText(name));

    private static string NotFoundText(string name) => $"There is no user named '{(name.Length <= MaxUsernameLength ? name : name[..MaxUsernameLength] + "…")}'.";

    [GeneratedRegex("^[A-Za-z0-9._-]{1,64}$")]
    private static partial Regex UsernameRegex();
}
