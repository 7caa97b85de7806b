using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Portcullis.Client;

namespace Portcullis.Cli;

/// <summary>
/// The server and credential one command uses: <c>PORTCULLIS_URL</c> / <c>PORTCULLIS_TOKEN</c> first, then the current
/// context (docs/cli.md). Made afresh for every command, so nothing is carried from one to the next.
/// </summary>
internal sealed class CliTarget
{
    /// <summary>The server this command talks to, once it is known (for error messages).</summary>
    public string? Url { get; private set; }

    public string Describe() => Url ?? "the server";

    public (string Url, string? Token, CliContext? Context) Resolve(bool needToken = true)
    {
        var config = new CredentialStore().Load();
        var context = config.Current is { } current ? config.Find(current) : null;
        var url = Environment.GetEnvironmentVariable("PORTCULLIS_URL") is { Length: > 0 } u ? u : context?.Endpoint;
        var token = Environment.GetEnvironmentVariable("PORTCULLIS_TOKEN") is { Length: > 0 } t ? t : context?.ApiToken;
        if (url is null)
            throw new CliException("No server: log in with `portcullis login --host URL`, or set PORTCULLIS_URL.");
        if (needToken && token is null)
            throw new CliException($"Not logged in to {url}: run `portcullis login`, or set PORTCULLIS_TOKEN.");
        Url = url;
        return (url, token, context);
    }

    public PortcullisClient Client(string url, string? token)
    {
        Url = url;
        HttpMessageHandler handler = new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(10) };
        if (token is not null)
            handler = new BearerTokenHandler(token) { InnerHandler = handler };
        var http = new HttpClient(handler) { BaseAddress = new Uri(url.TrimEnd('/') + "/"), Timeout = TimeSpan.FromSeconds(60) };
        // Shown where a person approves a device login, and in the audit log.
        http.DefaultRequestHeaders.UserAgent.Add(UserAgent);
        return new PortcullisClient(http);
    }

    private static readonly System.Net.Http.Headers.ProductInfoHeaderValue UserAgent =
        new("portcullis-cli", typeof(CliTarget).Assembly.GetName().Version?.ToString(3) ?? "0");

    /// <summary>A client for the resolved server with the resolved credential.</summary>
    public PortcullisClient Client()
    {
        var (url, token, _) = Resolve();
        return Client(url, token);
    }
}

/// <summary>What every command shares: running with clear errors and exit codes, output for people and for scripts, prompts.</summary>
internal static class CommandSupport
{
    public static readonly Option<bool> JsonOption = new("--json") { Description = "Machine-readable JSON output.", Recursive = true };

    /// <summary>Runs a command body with its own <see cref="CliTarget"/>, turning expected failures into a message and an exit code.</summary>
    public static Func<ParseResult, CancellationToken, Task<int>> Run(Func<ParseResult, CliTarget, CancellationToken, Task> body) => async (parse, cancellationToken) =>
    {
        var target = new CliTarget();
        try
        {
            await body(parse, target, cancellationToken);
            return 0;
        }
        catch (CliException e)
        {
            if (e.Message.Length > 0)
                Console.Error.WriteLine($"error: {e.Message}");
            return e.ExitCode;
        }
        catch (PortcullisApiException e)
        {
            Console.Error.WriteLine("error: " + e.Status switch
            {
                HttpStatusCode.Unauthorized => $"{e.Message}\nYour credential is not accepted any more: log in again with `portcullis login`.",
                HttpStatusCode.Forbidden => $"{e.Message}\nYour credential lacks the rights for this.",
                _ => e.Message,
            });
            return 1;
        }
        catch (HttpRequestException e)
        {
            Console.Error.WriteLine($"error: cannot reach {target.Describe()}: {e.Message}\nCheck the address (portcullis context current) and that the server runs.");
            return 1;
        }
        catch (TaskCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            Console.Error.WriteLine($"error: {target.Describe()} did not answer in time.");
            return 1;
        }
        catch (JsonException)
        {
            Console.Error.WriteLine($"error: {target.Describe()} answered with something that is not Portcullis's API. Check the address (portcullis context current).");
            return 1;
        }
    };

    /// <summary>Stable field names, snake_case, nulls included: scripts can rely on every field being there.</summary>
    private static readonly JsonSerializerOptions OutputJson = new(JsonSerializerDefaults.Web) { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static void Print(ParseResult parse, object json, Action human)
    {
        if (parse.GetValue(JsonOption))
            Console.WriteLine(JsonSerializer.Serialize(json, OutputJson));
        else
            human();
    }

    private static bool Color => !Console.IsOutputRedirected && Environment.GetEnvironmentVariable("NO_COLOR") is null;

    public static string Bold(string s) => Color ? $"\u001b[1m{s}\u001b[0m" : s;

    /// <summary>Aligned columns; the header bold on a terminal.</summary>
    public static void Table(string[] header, IEnumerable<string[]> rows)
    {
        var all = rows.ToList();
        var widths = header.Select((h, i) => Math.Max(h.Length, all.Count == 0 ? 0 : all.Max(r => r[i].Length))).ToArray();
        Console.WriteLine(Bold(string.Join("  ", header.Select((h, i) => h.PadRight(widths[i]))).TrimEnd()));
        foreach (var r in all)
            Console.WriteLine(string.Join("  ", r.Select((c, i) => c.PadRight(widths[i]))).TrimEnd());
    }

    public static string Date(DateTime? d) => d?.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture) ?? "never";

    public static string ReadSecretLine(string what)
    {
        var line = Console.In.ReadLine();
        if (string.IsNullOrEmpty(line))
            throw new CliException($"Nothing on standard input: pipe the {what} in, e.g. `echo \"$SECRET\" | portcullis ...`.", 2);
        return line.Trim();
    }

    public static string Prompt(string label, bool hidden = false)
    {
        if (Console.IsInputRedirected)
            throw new CliException($"{label.TrimEnd(':', ' ')} is needed and there is no terminal to ask on: pass it as an option (or --password-stdin).", 2);
        Console.Write(label + " ");
        if (!hidden)
            return Console.ReadLine()?.Trim() ?? "";
        var text = new StringBuilder();
        while (true)
        {
            var key = Console.ReadKey(intercept: true);
            if (key.Key == ConsoleKey.Enter)
                break;
            if (key.Key == ConsoleKey.Backspace)
            {
                if (text.Length > 0)
                    text.Length--;
            }
            else if (!char.IsControl(key.KeyChar))
                text.Append(key.KeyChar);
        }
        Console.WriteLine();
        return text.ToString();
    }
}
