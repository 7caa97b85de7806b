using System.ComponentModel;
using System.Diagnostics;
using Spectre.Console;

namespace Portcullis.Cli;

/// <summary>
/// The CLI's conversation with a person at a terminal: an arrow-key menu and a spinner (Spectre.Console), only when both
/// standard input and output are a terminal. Piped or redirected, commands never ask; they say which option to pass.
/// </summary>
internal static class Interactive
{
    public static bool IsTerminal => !Console.IsInputRedirected && !Console.IsOutputRedirected;

    // Whether to ask is decided above, not by Spectre's detection of the environment, which takes any CI variable to
    // mean "no person here" even on a pseudo-terminal.
    private static readonly Lazy<IAnsiConsole> Terminal = new(() => AnsiConsole.Create(new AnsiConsoleSettings
    {
        Interactive = InteractionSupport.Yes,
        Enrichment = new ProfileEnrichment { UseDefaultEnrichers = false },
    }));

    /// <summary>An arrow-key menu; the question and the answer stay on the screen.</summary>
    public static T Choose<T>(string question, IReadOnlyList<(T Value, string Text)> choices)
    {
        var answer = Terminal.Value.Prompt(new SelectionPrompt<string>().Title(Markup.Escape(question)).AddChoices(choices.Select(c => c.Text)));
        Console.WriteLine($"{question} {answer}");
        return choices.First(c => c.Text == answer).Value;
    }

    /// <summary>Runs <paramref name="work"/> under a spinner on a terminal, or after one line saying what it waits for.</summary>
    public static async Task WaitAsync(string what, Func<Task> work)
    {
        if (!IsTerminal)
        {
            Console.WriteLine(what + "...");
            await work();
            return;
        }
        await Terminal.Value.Status().Spinner(Spinner.Known.Dots).StartAsync(Markup.Escape(what), _ => work());
    }
}

/// <summary>Opens a page in the person's browser, when there is one to open.</summary>
internal static class Browser
{
    /// <summary>
    /// <c>$BROWSER</c> when set (its first entry); otherwise the desktop's opener: <c>open</c> on macOS, the shell on Windows,
    /// <c>xdg-open</c> on Linux when a display is set. False when there is none or it cannot start: the address is printed anyway.
    /// </summary>
    public static bool TryOpen(string url)
    {
        ProcessStartInfo? start;
        if (Environment.GetEnvironmentVariable("BROWSER") is { Length: > 0 } browser)
            start = new ProcessStartInfo(browser.Split(':')[0]);
        else if (OperatingSystem.IsMacOS())
            start = new ProcessStartInfo("open");
        else if (OperatingSystem.IsWindows())
            return Start(new ProcessStartInfo(url) { UseShellExecute = true });
        else if (Environment.GetEnvironmentVariable("DISPLAY") is { Length: > 0 } || Environment.GetEnvironmentVariable("WAYLAND_DISPLAY") is { Length: > 0 })
            start = new ProcessStartInfo("xdg-open");
        else
            return false;
        start.ArgumentList.Add(url);
        return Start(start);
    }

    private static bool Start(ProcessStartInfo start)
    {
        try
        {
            using var process = Process.Start(start);
            return process is not null;
        }
        catch (Win32Exception)
        {
            return false;
        }
    }
}
