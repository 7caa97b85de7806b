using System.Diagnostics;

namespace Portcullis.Tests.Infrastructure;

/// <summary>
/// Runs Python scripts with Debian's interpreter (<c>/usr/bin/python3</c>), which sees the Debian-packaged libraries
/// (authlib, PyJWT, requests-oauthlib, requests, pydantic) that ./test.sh installs. Secrets go on stdin, never argv.
/// </summary>
public static class DebianPython
{
    public const string Interpreter = "/usr/bin/python3";

    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    /// <summary>A script from the tests' Compat folder, or Python code given as text.</summary>
    public static async Task<Result> RunAsync(string scriptOrCode, IEnumerable<string> arguments, string stdin = "",
        IReadOnlyDictionary<string, string>? environment = null, bool isCode = false)
    {
        Assert.True(File.Exists(Interpreter),
            $"{Interpreter} is missing: ./test.sh installs Debian's python3 with the libraries these tests use (see test.sh).");
        var psi = new ProcessStartInfo(Interpreter)
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        if (isCode)
            psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(isCode ? scriptOrCode : Path.Combine(AppContext.BaseDirectory, "Compat", scriptOrCode));
        foreach (var argument in arguments)
            psi.ArgumentList.Add(argument);
        // Loopback is plain HTTP: the OAuth libraries refuse it unless told that this is on purpose.
        psi.Environment["AUTHLIB_INSECURE_TRANSPORT"] = "1";
        psi.Environment["OAUTHLIB_INSECURE_TRANSPORT"] = "1";
        psi.Environment["NO_PROXY"] = "127.0.0.1,localhost";
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
            psi.Environment[key] = value;
        using var process = Process.Start(psi)!;
        await process.StandardInput.WriteAsync(stdin);
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"the Python script did not finish in 120 s: {await stderr}");
        }
        return new Result(process.ExitCode, await stdout, await stderr);
    }
}
