using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;

namespace Portcullis.Tests.Infrastructure;

/// <summary>
/// The CLI as a running process whose output is read as it comes (prompts end without a newline), optionally under a
/// pseudo-terminal (<c>script</c>), where what the test writes is what a person types: keys, arrows, Ctrl-C.
/// </summary>
public sealed class CliProcess : IAsyncDisposable
{
    public static readonly string Dll = Path.Combine(AppContext.BaseDirectory, "portcullis.dll");

    /// <summary>The keys a person presses, as a terminal sends them.</summary>
    public const string Down = "\u001b[B", Enter = "\r", CtrlC = "\u0003";

    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly Task _reading;

    private CliProcess(Process process)
    {
        _process = process;
        _reading = Task.WhenAll(ReadAsync(process.StandardOutput.BaseStream), ReadAsync(process.StandardError.BaseStream));
    }

    /// <param name="terminal">Under a pseudo-terminal (standard input and output are a terminal), or with both redirected.</param>
    public static CliProcess Start(string configDir, IEnumerable<string> args, bool terminal, Dictionary<string, string>? env = null)
    {
        ProcessStartInfo psi;
        if (terminal)
        {
            // Ctrl-C as a person's shell would have it: a test runner started in the background (as CI may start it)
            // passes SIGINT on as ignored, and a program that finds it ignored rightly keeps ignoring it.
            psi = new ProcessStartInfo("env");
            foreach (var a in new[] { "--default-signal=INT", "script", "-qefc", string.Join(' ', new[] { "dotnet", Dll }.Concat(args).Select(Quote)), "/dev/null" })
                psi.ArgumentList.Add(a);
            psi.Environment["TERM"] = "xterm";
        }
        else
        {
            psi = new ProcessStartInfo("dotnet");
            psi.ArgumentList.Add(Dll);
            foreach (var a in args)
                psi.ArgumentList.Add(a);
        }
        psi.RedirectStandardInput = psi.RedirectStandardOutput = psi.RedirectStandardError = true;
        psi.Environment["PORTCULLIS_CONFIG_DIR"] = configDir;
        psi.Environment["NO_COLOR"] = "1";
        psi.Environment.Remove("PORTCULLIS_URL");
        psi.Environment.Remove("PORTCULLIS_TOKEN");
        psi.Environment.Remove("BROWSER");
        psi.Environment.Remove("DISPLAY");
        psi.Environment.Remove("WAYLAND_DISPLAY");
        foreach (var (k, v) in env ?? [])
            psi.Environment[k] = v;
        return new CliProcess(Process.Start(psi)!);
    }

    private static string Quote(string arg) => "'" + arg.Replace("'", "'\\''") + "'";

    private async Task ReadAsync(Stream stream)
    {
        var buffer = new byte[4096];
        int read;
        while ((read = await stream.ReadAsync(buffer)) > 0)
        {
            lock (_output)
                _output.Append(Encoding.UTF8.GetString(buffer, 0, read));
        }
    }

    /// <summary>Everything the process wrote so far, standard output and error together.</summary>
    public string Output
    {
        get { lock (_output) return _output.ToString(); }
    }

    /// <summary>Waits (at most 60 s) until the output matches <paramref name="pattern"/>; the match.</summary>
    public async Task<Match> WaitForAsync(string pattern)
    {
        var regex = new Regex(pattern);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            if (regex.Match(Output) is { Success: true } match)
                return match;
            if (_process.HasExited)
            {
                await _reading;
                return regex.Match(Output) is { Success: true } last ? last : throw new InvalidOperationException($"exited ({_process.ExitCode}) without /{pattern}/:\n{Output}");
            }
            await Task.Delay(50);
        }
        throw new TimeoutException($"no /{pattern}/ in:\n{Output}");
    }

    public async Task TypeAsync(string keys)
    {
        await _process.StandardInput.WriteAsync(keys);
        await _process.StandardInput.FlushAsync();
    }

    /// <summary>Waits (at most 60 s) for the process to end; its exit code and all it wrote.</summary>
    public async Task<(int ExitCode, string Output)> ExitAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await _process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException("the CLI did not exit within 60 s; it wrote:\n" + Output);
        }
        await _reading;
        return (_process.ExitCode, Output);
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
            _process.Kill(entireProcessTree: true);
        await _process.WaitForExitAsync();
        _process.Dispose();
    }
}
