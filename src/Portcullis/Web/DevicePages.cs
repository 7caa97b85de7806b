using System.Globalization;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Gateway;
using Portcullis.OAuth;
using Portcullis.Security;
using Portcullis.Tokens;
using Portcullis.Web.Pages;

namespace Portcullis.Web;

/// <summary>
/// <c>/device</c>: where a person approves or denies a login that <c>portcullis login --web</c> started (OAuth/DeviceGrant.cs,
/// docs/web-ui.md). Like every page it needs a web session (a person who is not logged in logs in first and comes back)
/// and its forms carry an antiforgery token. Every code typed is throttled like a password, per account and per address.
/// </summary>
internal static class DevicePages
{
    public static IEndpointRouteBuilder MapDevicePages(this IEndpointRouteBuilder app)
    {
        var pages = app.MapGroup(DeviceGrant.VerificationPath).AsWebPages().AddEndpointFilter(TokenPages.RequireSession);
        pages.MapGet("", EnterCodeForm);
        pages.MapPost("", ShowAsync).DisableAntiforgery();
        pages.MapPost("/approve", ApproveAsync).DisableAntiforgery();
        pages.MapPost("/deny", DenyAsync).DisableAntiforgery();
        // Where a login that ended in the middle of a decision comes back to after logging in again.
        pages.MapGet("/approve", () => Results.Redirect(DeviceGrant.VerificationPath));
        pages.MapGet("/deny", () => Results.Redirect(DeviceGrant.VerificationPath));
        return app;
    }

    /// <summary>
    /// The code form, filled in with <c>user_code</c> when the link of <c>verification_uri_complete</c> brought the person here.
    /// The code is only looked up once the person submits it (RFC 8628 §5.4: they confirm it is the code in their terminal),
    /// so a link from elsewhere can neither show a login's details nor spend the person's allowance of wrong codes.
    /// </summary>
    private static IResult EnterCodeForm(HttpContext http, [Microsoft.AspNetCore.Mvc.FromQuery(Name = "user_code")] string? userCode) =>
        PageResults.Render<DevicePage>(http, new { UserCode = userCode is { Length: <= 2 * DeviceGrant.UserCodeLength } typed ? typed : "" });

    /// <summary>The login the submitted code names, with the choices for its token.</summary>
    private static async Task<IResult> ShowAsync(HttpContext http, DeviceGrant device, LoginThrottle throttle, AuditLog audit, ServiceRegistry registry,
        PortcullisDb db, TimeProvider time, CancellationToken cancellationToken)
    {
        var fields = await http.Request.ReadFormAsync(cancellationToken);
        var (login, refused) = await LookUpAsync(http, fields["user_code"].ToString(), device, throttle, audit);
        if (refused is not null)
            return refused;
        return Confirm(http, registry, login!, await DefaultFormAsync(http, login!, db, time), null);
    }

    private static async Task<IResult> ApproveAsync(HttpContext http, DeviceGrant device, LoginThrottle throttle, AuditLog audit, ServiceRegistry registry,
        PortcullisDb db, TokenFormat format, InvalidationBus invalidation, IOptions<TokenOptions> options, TimeProvider time, CancellationToken cancellationToken)
    {
        var fields = await http.Request.ReadFormAsync(cancellationToken);
        var (login, refused) = await LookUpAsync(http, fields["user_code"].ToString(), device, throttle, audit);
        if (refused is not null)
            return refused;
        // The token goes to the waiting terminal, never into a link.
        var form = TokenForm.Read(fields) with { Link = false };
        var (request, invalid) = form.ToRequest();
        if (invalid is not null)
            return Confirm(http, registry, login!, form, invalid);

        var person = http.Credential();
        if (!await device.DecideAsync(login!.UserCode, DeviceAuthorization.Approved, person, cancellationToken))
            return Gone(http);
        Checked<Client.CreatedTokenResponse> issued;
        try
        {
            issued = await TokensApi.IssueAsync(request!, http, db, format, audit, invalidation, options.Value, time, cancellationToken);
        }
        catch
        {
            await device.UndoApprovalAsync(login.UserCode, CancellationToken.None);
            throw;
        }
        var (created, error) = issued;
        if (error is not null)
        {
            await device.UndoApprovalAsync(login.UserCode, cancellationToken);
            return Confirm(http, registry, login, form, TokenForm.OnForm(error));
        }
        await device.HandOverAsync(login, created!.Id, created.Token!, cancellationToken);
        await audit.EnqueueAsync(audit.Create(http, AuditEvents.DeviceApproved, person.Owner.Name, person.Owner.Id, created.Id.ToString(CultureInfo.InvariantCulture),
            new { device_name = login.DeviceName, requested_from = login.RequestedFrom, user_agent = login.UserAgent, name = created.Name, scopes = created.Scopes }),
            cancellationToken);
        return PageResults.Render<MessagePage>(http, new
        {
            Title = "Device approved",
            Text = $"Go back to your terminal: it now holds the new token '{created.Name}' and is logged in as {person.Owner.Name}. " +
                   "You can delete the token under Tokens at any time.",
        });
    }

    private static async Task<IResult> DenyAsync(HttpContext http, DeviceGrant device, LoginThrottle throttle, AuditLog audit, CancellationToken cancellationToken)
    {
        var fields = await http.Request.ReadFormAsync(cancellationToken);
        var (login, refused) = await LookUpAsync(http, fields["user_code"].ToString(), device, throttle, audit);
        if (refused is not null)
            return refused;
        var person = http.Credential();
        if (!await device.DecideAsync(login!.UserCode, DeviceAuthorization.Denied, person, cancellationToken))
            return Gone(http);
        await audit.EnqueueAsync(audit.Create(http, AuditEvents.DeviceDenied, person.Owner.Name, person.Owner.Id,
            details: new { device_name = login.DeviceName, requested_from = login.RequestedFrom, user_agent = login.UserAgent }), cancellationToken);
        return PageResults.Render<MessagePage>(http, new
        {
            Title = "Device login denied",
            Text = "Nothing was created. The terminal that asked is told that the login was denied.",
        });
    }

    /// <summary>
    /// The pending login a typed code names, through the throttle: a code that no login has counts like a wrong password
    /// (per account and per address, docs/decisions.md), so 8 letters cannot be guessed by trying. A code that some login
    /// has is not a guess: its attempt is given back, but the count of wrong ones is never cleared by it (anyone can make
    /// a right code with <c>POST /auth/device</c>). A login decided already, or expired, is over (409), not a wrong code.
    /// </summary>
    private static async Task<(DeviceAuthorization? Login, IResult? Refused)> LookUpAsync(HttpContext http, string typed, DeviceGrant device,
        LoginThrottle throttle, AuditLog audit)
    {
        var person = http.Credential();
        await using var attempt = await throttle.CheckAsync(LoginKind.UserCode, person.Owner.Name, http, http.RequestAborted);
        if (attempt.IsThrottled)
            return (null, EnterCode(http, typed, attempt.RefuseWith429(http.Response), StatusCodes.Status429TooManyRequests));
        if (await device.FindAsync(typed, http.RequestAborted) is { } login)
            return device.IsPending(login) ? (login, null) : (null, Gone(http));
        await attempt.RecordFailureAsync();
        await audit.EnqueueAsync(audit.Create(http, AuditEvents.DeviceCodeRejected, person.Owner.Name, person.Owner.Id,
            details: new { reason = "no pending login has this code" }), http.RequestAborted);
        return (null, EnterCode(http, typed,
            "No login is waiting for this code. Check it against your terminal: a code works once, and only until it expires.", StatusCodes.Status400BadRequest));
    }

    private static IResult EnterCode(HttpContext http, string typed, string error, int status) =>
        PageResults.Render<DevicePage>(http, new { UserCode = typed.Length <= 2 * DeviceGrant.UserCodeLength ? typed : "", CodeError = error }, status);

    private static IResult Confirm(HttpContext http, ServiceRegistry registry, DeviceAuthorization login, TokenForm form, RuleError? error) =>
        PageResults.Render<DevicePage>(http, new
        {
            Login = login,
            Form = form,
            Error = error,
            Services = registry.All.Where(s => s.Protected).Select(s => s.Name).Distinct().ToList(),
            IsAdmin = http.Credential().Owner.IsAdmin,
        }, error?.Status ?? StatusCodes.Status200OK);

    /// <summary>Another tab or instance decided first, or the code ran out while the form was open.</summary>
    private static IResult Gone(HttpContext http) => PageResults.Render<MessagePage>(http, new
    {
        Title = "This login is over",
        Text = "The code was approved or denied already, or it expired. Start the login again in your terminal if you still need it.",
    }, StatusCodes.Status409Conflict);

    /// <summary>
    /// What the CLI asked for, as the form's starting point: the access of its <c>scope</c> (but never Admin) and a name that says where the token lives, <c>cli on HOST</c>, made unique among the person's active tokens.
    /// </summary>
    private static async Task<TokenForm> DefaultFormAsync(HttpContext http, DeviceAuthorization login, PortcullisDb db, TimeProvider time)
    {
        var person = http.Credential().Owner;
        var name = "cli on " + (login.DeviceName ?? login.RequestedFrom ?? "a terminal");
        var now = time.GetUtcNow().UtcDateTime;
        if (await TokensApi.NameTakenAsync(db, person.Id, name, now, http.RequestAborted))
            name += " " + now.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture);
        if (login.Scope is null)
            return TokenForm.Default with { Name = name };
        var scopes = ScopeSet.Parse(login.Scope);
        var allServices = scopes.Flags.HasFlag(ScopeFlags.Services);
        return TokenForm.Default with
        {
            Name = name,
            Api = scopes.Flags.HasFlag(ScopeFlags.Api),
            Services = allServices || scopes.Services.Count > 0,
            ServiceChoice = !allServices && scopes.Services.Count > 0 ? "chosen" : "all",
            ChosenServices = scopes.Services,
            // Never ticked by the request, which anyone can make: a person who wants Admin on this token ticks it.
            Admin = false,
        };
    }
}
