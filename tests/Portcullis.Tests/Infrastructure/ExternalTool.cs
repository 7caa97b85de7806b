using System.Diagnostics;

namespace Portcullis.Tests.Infrastructure;

/// <summary>A program the tests take from the machine (npm, npx, python3): run to its end, and a missing one fails the test saying how to get it.</summary>
public static class ExternalTool
{
    public static async Task<(int ExitCode, string Output, string Error)> RunAsync(string program, IEnumerable<string> arguments, string howToGetIt,
        TimeSpan timeout, string? input = null)
    {
        var psi = new ProcessStartInfo(program)
        {
            RedirectStandardInput = input is not null, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var argument in arguments)
            psi.ArgumentList.Add(argument);
        Process process;
        try
        {
            process = Process.Start(psi)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            Assert.Fail($"{program} could not be started ({e.Message}). {howToGetIt}");
            throw;
        }
        using (process)
        {
            if (input is not null)
            {
                await process.StandardInput.WriteAsync(input);
                process.StandardInput.Close();
            }
            var output = process.StandardOutput.ReadToEndAsync();
            var error = process.StandardError.ReadToEndAsync();
            using var cancel = new CancellationTokenSource(timeout);
            await process.WaitForExitAsync(cancel.Token);
            return (process.ExitCode, await output, await error);
        }
    }
}
