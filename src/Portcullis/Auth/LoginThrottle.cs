using System.Data.Common;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Storage;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.OAuth;
using Portcullis.Users;

namespace Portcullis.Auth;

/// <summary>What a login attempt checks.</summary>
internal enum LoginKind
{
    /// <summary>A user's password: counted per username (known or not) and per client address.</summary>
    Password,

    /// <summary>
    /// An OAuth client's secret: counted per client address only. A secret is 178 random bits, so no
    /// limit changes the odds of guessing it; a per-client counter would only let anyone who knows a
    /// client_id (it is in every JWT the client holds) lock that client out of token issuance.
    /// </summary>
    ClientSecret,

    /// <summary>
    /// A user code typed at <c>/device</c> (OAuth/DeviceGrant.cs): counted like a password, per account that types it and per
    /// client address, on counters of its own, so that mistyped codes never lock anyone's password login.
    /// </summary>
    UserCode,
}

/// <summary>
/// Failed-login throttling (docs/decisions.md), the one place every password and client-secret check goes
/// through: the password grant (<c>/auth/token</c>, <c>/auth/token/cli</c>), <c>POST /api/v1/me/password</c>,
/// the web UI login, OAuth client authentication, and the user codes of device logins typed at <c>/device</c>. Every caller does the same:
/// <code>
/// await using var attempt = await throttle.CheckAsync(LoginKind.Password, username, http, cancellationToken);
/// if (attempt.IsThrottled)
///     return ...status 429 with the text of attempt.RefuseWith429(http.Response)...;   // sets Retry-After
/// var ok = ...look the user up, check the secret...;
/// if (ok) await attempt.RecordSuccessAsync(); else await attempt.RecordFailureAsync();
/// </code>
/// <list type="bullet">
/// <item>Call <see cref="CheckAsync"/> before looking anything up, and when throttled answer without
/// checking the secret: the refusal is then the same, and as quick, for every username, known or not.
/// For <see cref="LoginKind.ClientSecret"/> pass the client_id as the key (the audit event names it).</item>
/// <item>For a password, <see cref="CheckAsync"/> reserves one attempt on each counter, atomically in the
/// database, before the password is checked. Concurrent requests, on any instance, therefore never
/// check more passwords than the limit. A failure keeps the reservation; a success gives the address's
/// back and clears the username's counter; an attempt disposed with neither recorded (the request
/// failed before the password was checked) gives both back.</item>
/// <item>For a client secret, <see cref="ClientAuthenticator"/> checks the secret first and calls
/// <see cref="CheckAsync"/> only for a wrong one: it reads the address's counter and
/// <see cref="LoginAttempt.RecordFailureAsync"/> adds to it. A secret cannot be guessed, so a few parallel
/// checks past the limit change nothing, and a right secret is never refused and touches no counter.</item>
/// <item>Fixed windows: a counter's first attempt opens a window of <c>Auth:FailedLoginWindow</c>;
/// once <c>Auth:MaxFailedLoginsPerUser</c> / <c>Auth:MaxFailedLoginsPerAddress</c> is reached, attempts are
/// refused until that window ends, which is what <c>Retry-After</c> says.</item>
/// <item>Only secret checks are throttled. API tokens and JWTs never are, so an attacker who locks an
/// account cannot stop its owner's tokens.</item>
/// <item>Refused attempts are audited as <c>login.throttled</c>, once per counter and window.</item>
/// <item>Once the database has said a counter is full, this instance remembers it until the window ends
/// (<see cref="FullCounters"/>) and refuses from memory: a flood of wrong passwords or secrets then costs
/// neither a database statement nor a hash, and the verification of tokens keeps its CPU.</item>
/// </list>
/// Call it outside a transaction: a reservation must commit at once to count for the other requests.
/// </summary>
internal sealed partial class LoginThrottle(
    IServiceProvider services,
    FullCounters fullCounters,
    AuditLog audit,
    PortcullisMetrics metrics,
    TimeProvider time,
    IOptions<AuthOptions> options,
    ILogger<LoginThrottle> logger)
{
    /// <summary>Resolved on first use: a refusal from memory never rents a database context.</summary>
    private PortcullisDb Db => field ??= services.GetRequiredService<PortcullisDb>();

    private const string UserCounter = "user";
    private const string AddressCounter = "address";
    private const string CodeUserCounter = "code_user";
    private const string CodeAddressCounter = "code_address";

    /// <summary>Counters per account (the others are per address), limited by <c>Auth:MaxFailedLoginsPerUser</c>.</summary>
    private static bool IsPerAccount(string counter) => counter is UserCounter or CodeUserCounter;
    private const int MaxSubjectLength = 64;

    // Per process; stale rows are harmless (the next attempt resets them), so any instance sweeping now and then is enough.
    private static long s_nextSweepTicks;

    internal readonly record struct Counter(string Kind, string Subject);

    internal readonly record struct Reservation(string Kind, string Subject, DateTime WindowStart);

    /// <summary>
    /// Checks the counters of <paramref name="key"/> (a username, or a client_id) and of the request's
    /// client address. For a password it reserves one attempt on each; for a client secret it only reads
    /// the address's counter, and a failure is counted when it is recorded.
    /// </summary>
    public async Task<LoginAttempt> CheckAsync(LoginKind kind, string key, HttpContext http, CancellationToken cancellationToken)
    {
        var o = options.Value;
        var counters = new List<Counter>(2);
        if (kind != LoginKind.ClientSecret)
            counters.Add(new Counter(kind == LoginKind.UserCode ? CodeUserCounter : UserCounter, UserSubject(key)));
        if (o.MaxFailedLoginsPerAddress > 0)
            counters.Add(new Counter(kind == LoginKind.UserCode ? CodeAddressCounter : AddressCounter, AddressSubject(http.ClientAddress())));
        if (counters.Count == 0)
            return new LoginAttempt(this, [], [], null);

        var now = time.GetUtcNow().UtcDateTime;
        if (fullCounters.RefusedUntil(counters, now) is { } refusedUntil)
        {
            metrics.CountLoginThrottled();
            return new LoginAttempt(this, [], [], (int)Math.Ceiling((refusedUntil - now).TotalSeconds));
        }
        await Db.Database.OpenConnectionAsync(cancellationToken);
        try
        {
            var connection = Db.Database.GetDbConnection();
            if (kind == LoginKind.ClientSecret)
            {
                // A secret check costs one SHA-256 and cannot be won by guessing, so there is nothing to
                // reserve: a right secret writes nothing, and issuing tokens to machines stays cheap.
                var (counterKind, subject, expired) = (counters[0].Kind, counters[0].Subject, now - o.FailedLoginWindow);
                var attempts = await Db.LoginCounters.AsNoTracking().Where(c => c.Kind == counterKind && c.Subject == subject && c.WindowStart > expired)
                    .Select(c => (int?)c.Attempts).FirstOrDefaultAsync(cancellationToken);
                return attempts >= o.MaxFailedLoginsPerAddress
                    ? await RefuseAsync(connection, counters, http, key, now, cancellationToken)
                    : new LoginAttempt(this, [], counters, null);
            }

            var reserved = await CountAsync(connection, counters, now, o.MaxFailedLoginsPerUser, o.MaxFailedLoginsPerAddress, cancellationToken);
            await SweepAsync(now, cancellationToken);
            if (reserved.Count == counters.Count)
                return new LoginAttempt(this, reserved, [], null);

            // Refused: no password is checked, so give back what was reserved.
            foreach (var r in reserved)
                await ReleaseAsync(r, CancellationToken.None);
            return await RefuseAsync(connection, counters.Where(c => !reserved.Any(r => r.Kind == c.Kind)).ToList(), http, null, now, cancellationToken);
        }
        finally
        {
            await Db.Database.CloseConnectionAsync();
        }
    }

    /// <summary>
    /// Adds one attempt to each counter whose window has ended (it starts a new one) or is below its
    /// limit, in one statement; a counter at its limit is left alone and returns no row. SQLite and
    /// PostgreSQL apply each row's upsert atomically, so no two requests can take the last attempt.
    /// </summary>
    private async Task<List<Reservation>> CountAsync(DbConnection connection, List<Counter> counters, DateTime now, int userLimit, int addressLimit,
        CancellationToken cancellationToken)
    {
        var sql = new StringBuilder("INSERT INTO login_throttle (kind, subject, attempts, window_start, refused) VALUES ");
        var parameters = new List<(string, object?)>
        {
            ("@now", now), ("@expired", now - options.Value.FailedLoginWindow), ("@userLimit", userLimit), ("@addressLimit", addressLimit),
        };
        for (var i = 0; i < counters.Count; i++)
        {
            sql.Append(CultureInfo.InvariantCulture, $"{(i > 0 ? ", " : "")}(@kind{i}, @subject{i}, 1, @now, 0)");
            parameters.Add(($"@kind{i}", counters[i].Kind));
            parameters.Add(($"@subject{i}", counters[i].Subject));
        }
        sql.Append("""
             ON CONFLICT (kind, subject) DO UPDATE SET
                attempts = CASE WHEN login_throttle.window_start <= @expired THEN 1 ELSE login_throttle.attempts + 1 END,
                refused = CASE WHEN login_throttle.window_start <= @expired THEN 0 ELSE login_throttle.refused END,
                window_start = CASE WHEN login_throttle.window_start <= @expired THEN @now ELSE login_throttle.window_start END
            WHERE login_throttle.window_start <= @expired
               OR login_throttle.attempts < CASE WHEN login_throttle.kind IN ('user', 'code_user') THEN @userLimit ELSE @addressLimit END
            RETURNING kind, subject, window_start
            """);
        var reserved = new List<Reservation>(counters.Count);
        await using var cmd = Sql.Command(connection, Transaction, sql.ToString(), [.. parameters]);
        await using var reader = await cmd.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
            reserved.Add(new Reservation(reader.GetString(0), reader.GetString(1), Sql.Utc(reader, 2)));
        return reserved;
    }

    /// <summary>Counts the refusal on each full counter, audits the first one of its window, and says how long to wait.</summary>
    private async Task<LoginAttempt> RefuseAsync(DbConnection connection, List<Counter> full, HttpContext http, string? clientId, DateTime now,
        CancellationToken cancellationToken)
    {
        var o = options.Value;
        var until = now + TimeSpan.FromSeconds(1);
        var events = new List<AuditEvent>();
        foreach (var (counter, subject) in full)
        {
            await using var cmd = Sql.Command(connection, Transaction,
                "UPDATE login_throttle SET refused = refused + 1 WHERE kind = @kind AND subject = @subject RETURNING window_start, refused",
                ("@kind", counter), ("@subject", subject));
            await using var reader = await cmd.ExecuteReaderAsync(cancellationToken);
            if (!await reader.ReadAsync(cancellationToken))
                continue; // swept or cleared a moment ago
            var windowEnd = Sql.Utc(reader, 0) + o.FailedLoginWindow;
            if (windowEnd > until)
                until = windowEnd;
            fullCounters.Remember(new Counter(counter, subject), windowEnd, now);
            if (reader.GetInt32(1) == 1)
            {
                events.Add(audit.Create(http, AuditEvents.LoginThrottled, subject, details: new
                {
                    counter,
                    limit = IsPerAccount(counter) ? o.MaxFailedLoginsPerUser : o.MaxFailedLoginsPerAddress,
                    endpoint = http.Request.Path.Value,
                    until = windowEnd,
                    client_id = clientId is null ? null : clientId.Length <= MaxSubjectLength ? clientId : clientId[..MaxSubjectLength],
                }));
            }
        }
        // Queued only once the statements above are done: waiting for room in the audit queue while an
        // UPDATE ... RETURNING is open would hold SQLite's write lock against the very writer that makes room.
        foreach (var e in events)
            await audit.EnqueueAsync(e, cancellationToken);
        metrics.CountLoginThrottled();
        return new LoginAttempt(this, [], [], (int)Math.Ceiling((until - now).TotalSeconds));
    }

    /// <summary>A wrong client secret: counted now, since nothing was reserved for it.</summary>
    internal async Task FailedAsync(IReadOnlyList<Counter> counters)
    {
        await Db.Database.OpenConnectionAsync(CancellationToken.None);
        try
        {
            var now = time.GetUtcNow().UtcDateTime;
            await CountAsync(Db.Database.GetDbConnection(), [.. counters], now, int.MaxValue, int.MaxValue, CancellationToken.None);
            await SweepAsync(now, CancellationToken.None);
        }
        finally
        {
            await Db.Database.CloseConnectionAsync();
        }
    }

    /// <summary>The password was right: the username's counter starts afresh, the address's reservation is given back.</summary>
    internal async Task SucceededAsync(IReadOnlyList<Reservation> reservations)
    {
        await Db.Database.OpenConnectionAsync(CancellationToken.None);
        try
        {
            foreach (var r in reservations)
            {
                if (IsPerAccount(r.Kind))
                {
                    await Db.LoginCounters.Where(c => c.Kind == r.Kind && c.Subject == r.Subject).ExecuteDeleteAsync(CancellationToken.None);
                    fullCounters.Forget(new Counter(r.Kind, r.Subject));
                }
                else
                    await ReleaseAsync(r, CancellationToken.None);
            }
        }
        finally
        {
            await Db.Database.CloseConnectionAsync();
        }
    }

    /// <summary>No secret was checked after all (the request failed first): every reservation is given back.</summary>
    internal async Task AbandonedAsync(IReadOnlyList<Reservation> reservations)
    {
        try
        {
            await Db.Database.OpenConnectionAsync(CancellationToken.None);
            try
            {
                foreach (var r in reservations)
                    await ReleaseAsync(r, CancellationToken.None);
            }
            finally
            {
                await Db.Database.CloseConnectionAsync();
            }
        }
        catch (Exception e) when (DatabaseFailures.IsDatabaseFailure(e))
        {
            // Already failing; the reservation then counts as a failure until its window ends.
            Log.ReservationNotReturned(logger, e.Message);
        }
    }

    private Task<int> ReleaseAsync(Reservation r, CancellationToken cancellationToken) =>
        Db.LoginCounters.Where(c => c.Kind == r.Kind && c.Subject == r.Subject && c.WindowStart == r.WindowStart && c.Attempts > 0)
            .ExecuteUpdateAsync(set => set.SetProperty(c => c.Attempts, c => c.Attempts - 1), cancellationToken);

    /// <summary>Deletes counters whose window has ended, once a window per process.</summary>
    private async Task SweepAsync(DateTime now, CancellationToken cancellationToken)
    {
        var next = Interlocked.Read(ref s_nextSweepTicks);
        if (now.Ticks < next || Interlocked.CompareExchange(ref s_nextSweepTicks, (now + options.Value.FailedLoginWindow).Ticks, next) != next)
            return;
        var expired = now - options.Value.FailedLoginWindow;
        await Db.LoginCounters.Where(c => c.WindowStart <= expired).ExecuteDeleteAsync(cancellationToken);
    }

    /// <summary>The request's transaction, when the caller opened one: the statements here join it.</summary>
    private DbTransaction? Transaction => Db.Database.CurrentTransaction?.GetDbTransaction();

    /// <summary>Usernames count without regard to case, like logins; anything longer than a username can be is cut.</summary>
    internal static string UserSubject(string username)
    {
        var normalized = User.Normalize(username);
        return normalized.Length <= MaxSubjectLength ? normalized : normalized[..MaxSubjectLength];
    }

    /// <summary>
    /// IPv4 by address; IPv6 by /64, the block one subscriber usually holds, so that hopping through
    /// its addresses buys nothing.
    /// </summary>
    internal static string AddressSubject(IPAddress? address)
    {
        if (address is null)
            return "unknown";
        if (address.IsIPv4MappedToIPv6)
            address = address.MapToIPv4();
        if (address.AddressFamily != AddressFamily.InterNetworkV6)
            return address.ToString();
        var bytes = address.GetAddressBytes();
        Array.Clear(bytes, 8, 8);
        return new IPAddress(bytes) + "/64";
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "Could not give back a login attempt reservation: {Error}")]
        public static partial void ReservationNotReturned(ILogger logger, string error);
    }
}

/// <summary>
/// The throttle's counters that this instance has seen full, each until its window ends, so that refusals are
/// answered from memory (docs/decisions.md, "Failed-login throttling"). Only the database's own answer puts a
/// counter here, so memory never refuses what the shared counter would allow, except when a counter went back
/// under its limit within the window (a reservation given back), where it errs on refusing. Bounded: when full,
/// ended windows are dropped, and if that is not enough a counter is not remembered (the database still refuses).
/// </summary>
internal sealed class FullCounters
{
    private const int Capacity = 100_000;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<LoginThrottle.Counter, DateTime> _until = new();

    /// <summary>The latest end of a remembered full counter among these, or null when none is known full.</summary>
    public DateTime? RefusedUntil(List<LoginThrottle.Counter> counters, DateTime now)
    {
        if (_until.IsEmpty)
            return null;
        DateTime? latest = null;
        foreach (var counter in counters)
        {
            if (_until.TryGetValue(counter, out var until) && until > now && (latest is null || until > latest))
                latest = until;
        }
        return latest;
    }

    /// <param name="now">The throttle's clock, the one its windows are measured with.</param>
    public void Remember(LoginThrottle.Counter counter, DateTime until, DateTime now)
    {
        if (_until.Count >= Capacity)
        {
            foreach (var (key, end) in _until)
            {
                if (end <= now)
                    _until.TryRemove(key, out _);
            }
            if (_until.Count >= Capacity)
                return;
        }
        _until[counter] = until;
    }

    public void Forget(LoginThrottle.Counter counter) => _until.TryRemove(counter, out _);
}

/// <summary>One login attempt, reserved or refused; see <see cref="LoginThrottle"/> for how to use it.</summary>
internal sealed class LoginAttempt(
    LoginThrottle throttle,
    IReadOnlyList<LoginThrottle.Reservation> reservations,
    IReadOnlyList<LoginThrottle.Counter> countOnFailure,
    int? retryAfterSeconds) : IAsyncDisposable
{
    private bool _settled = retryAfterSeconds is not null;

    /// <summary>Too many failures: answer 429 without checking the secret.</summary>
    public bool IsThrottled => retryAfterSeconds is not null;

    /// <summary>Whole seconds until the full counter's window ends.</summary>
    public int RetryAfterSeconds => retryAfterSeconds ?? 0;

    /// <summary>Sets <c>Retry-After</c> and returns the text for the 429 body. It is the same for every username, known or not.</summary>
    public string RefuseWith429(HttpResponse response)
    {
        response.Headers.RetryAfter = RetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
        return $"Too many failed logins for this username or from this address. Try again in {RetryAfterSeconds} seconds.";
    }

    /// <summary>
    /// The secret was wrong (or the account disabled): the attempt counts. Not cancellable: once the
    /// secret has been checked, the counters must be settled either way.
    /// </summary>
    public Task RecordFailureAsync()
    {
        if (_settled)
            return Task.CompletedTask;
        _settled = true;
        return countOnFailure.Count == 0 ? Task.CompletedTask : throttle.FailedAsync(countOnFailure);
    }

    /// <summary>The secret was right. Not cancellable, like <see cref="RecordFailureAsync"/>.</summary>
    public Task RecordSuccessAsync()
    {
        if (_settled)
            return Task.CompletedTask;
        _settled = true;
        return reservations.Count == 0 ? Task.CompletedTask : throttle.SucceededAsync(reservations);
    }

    /// <summary>Neither recorded: the request failed before the secret was checked, so a reservation is given back.</summary>
    public ValueTask DisposeAsync()
    {
        if (_settled || reservations.Count == 0)
            return ValueTask.CompletedTask;
        _settled = true;
        return new ValueTask(throttle.AbandonedAsync(reservations));
    }
}

/// <summary>A row of <c>login_throttle</c>: failed attempts of one user or address in the current window, and refusals since.</summary>
internal sealed class LoginCounter
{
    public required string Kind { get; init; }
    public required string Subject { get; init; }
    public int Attempts { get; init; }
    public DateTime WindowStart { get; init; }
    public int Refused { get; init; }
}
