using System.Diagnostics;

namespace Portcullis.Tests.Infrastructure;

/// <summary>The built <c>portcullis</c> CLI run once as a separate process, with its own configuration directory.</summary>
public static class CliRun
{
    private static readonly string Cli = Path.Combine(AppContext.BaseDirectory, "portcullis.dll");

    public sealed record Result(int ExitCode, string Out, string Err);

    /// <param name="args">The command line; "quoted parts" stay one argument.</param>
    public static async Task<Result> RunAsync(string configDir, string args, string? stdin = null, Dictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo("dotnet");
        psi.ArgumentList.Add(Cli);
        foreach (var a in SplitArgs(args))
            psi.ArgumentList.Add(a);
        psi.Environment["PORTCULLIS_CONFIG_DIR"] = configDir;
        psi.Environment["NO_COLOR"] = "1";
        psi.Environment.Remove("PORTCULLIS_URL");
        psi.Environment.Remove("PORTCULLIS_TOKEN");
        foreach (var (k, v) in env ?? [])
            psi.Environment[k] = v;
        return await RunAsync(psi, stdin);
    }

    /// <summary>Runs <paramref name="psi"/> (its output and input redirected here) to its end, with <paramref name="stdin"/> as its input.</summary>
    public static async Task<Result> RunAsync(ProcessStartInfo psi, string? stdin)
    {
        (psi.RedirectStandardOutput, psi.RedirectStandardError, psi.RedirectStandardInput) = (true, true, true);
        using var process = Process.Start(psi)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (stdin is not null)
            await process.StandardInput.WriteAsync(stdin);
        process.StandardInput.Close();
        await process.WaitForExitAsync();
        return new Result(process.ExitCode, await output, await error);
    }

    private static IEnumerable<string> SplitArgs(string args) =>
        System.Text.RegularExpressions.Regex.Matches(args, "\"([^\"]*)\"|(\\S+)").Select(m => m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value);
}
