// The idle-token reaper: Portcullis's equivalent of JupyterHub's cull_idle_servers. It lists every
// token with an admin service token and revokes those unused for longer than --timeout.
//
//   PORTCULLIS_URL=http://127.0.0.1:8080 PORTCULLIS_API_TOKEN=... dotnet run -- --timeout 30d --once [--dry-run]
//
// As a managed service (portcullis.json), Portcullis passes the URL and a token in the environment:
//   "Services": [{ "name": "idle-reaper", "admin": true,
//                  "command": ["dotnet", "IdleTokenReaper.dll", "--timeout", "30d", "--interval", "1h"] }]
using System.Globalization;
using Portcullis.Client;

var timeout = TimeSpan.FromDays(30);
var interval = TimeSpan.FromHours(1);
var dryRun = false;
var once = false;
for (var i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--timeout" when i + 1 < args.Length && TryParseDuration(args[i + 1], out var t):
            timeout = t;
            i++;
            break;
        case "--interval" when i + 1 < args.Length && TryParseDuration(args[i + 1], out var n):
            interval = n;
            i++;
            break;
        case "--dry-run":
            dryRun = true;
            break;
        case "--once":
            once = true;
            break;
        case "-h" or "--help":
            Console.WriteLine("usage: IdleTokenReaper [--timeout 30d] [--interval 1h] [--once] [--dry-run]\n" +
                "Revokes Portcullis tokens unused for longer than --timeout (s, m, h or d). Needs PORTCULLIS_URL and an admin PORTCULLIS_API_TOKEN.");
            return 0;
        default:
            Console.Error.WriteLine($"IdleTokenReaper: unknown or incomplete option '{args[i]}'. Try --help.");
            return 2;
    }
}

PortcullisClient client;
try
{
    client = PortcullisClient.FromEnvironment();
}
catch (InvalidOperationException e)
{
    Console.Error.WriteLine("IdleTokenReaper: " + e.Message);
    return 2;
}

var stop = new CancellationTokenSource(); // not disposed: ProcessExit may still cancel it
Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.Cancel(); };
AppDomain.CurrentDomain.ProcessExit += (_, _) => stop.Cancel();

while (!stop.IsCancellationRequested)
{
    try
    {
        await ReapAsync();
    }
    catch (Exception e) when (e is PortcullisApiException or HttpRequestException)
    {
        Console.Error.WriteLine("IdleTokenReaper: " + e.Message);
        if (once)
            return 1;
    }
    if (once)
        return 0;
    try
    {
        await Task.Delay(interval, stop.Token);
    }
    catch (OperationCanceledException)
    {
    }
}
return 0;

async Task ReapAsync()
{
    var me = await client.GetMeAsync(stop.Token);
    var tokens = await client.ListTokensAsync(all: true, cancellationToken: stop.Token);
    var now = DateTime.UtcNow;
    var reaped = 0;
    foreach (var token in tokens)
    {
        // Never its own credential, and never the tokens that come from the Services configuration.
        if (token.Status != "active" || token.Id.ToString(CultureInfo.InvariantCulture) == me.Auth.TokenId || token.Name is "configured" or "generated")
            continue;
        var lastUsed = token.LastUsedAt ?? token.CreatedAt;
        if (now - lastUsed <= timeout)
            continue;
        Console.WriteLine($"{(dryRun ? "would revoke" : "revoking")} {token.TokenHint} ({token.Name}, owner {token.Owner}): " +
            $"{(token.LastUsedAt is null ? "never used, created" : "last used")} {lastUsed:yyyy-MM-dd HH:mm:ss}Z");
        if (!dryRun)
            await client.RevokeTokenAsync(token.Id, stop.Token);
        reaped++;
    }
    Console.WriteLine($"{(dryRun ? "would revoke" : "revoked")} {reaped} of {tokens.Count} tokens idle for more than {timeout}");
}

static bool TryParseDuration(string text, out TimeSpan duration)
{
    duration = default;
    if (text.Length < 2 || !double.TryParse(text[..^1], NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || value <= 0)
        return false;
    duration = text[^1] switch
    {
        's' => TimeSpan.FromSeconds(value),
        'm' => TimeSpan.FromMinutes(value),
        'h' => TimeSpan.FromHours(value),
        'd' => TimeSpan.FromDays(value),
        _ => TimeSpan.Zero,
    };
    return duration > TimeSpan.Zero;
}
