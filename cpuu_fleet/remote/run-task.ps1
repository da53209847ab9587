# cpuu-fleet: run-task
<#
.SYNOPSIS
    Runs a command in the interactive user's session through a one-shot scheduled task.
.DESCRIPTION
    WinRM runs in session 0 under a network logon and cannot see the logged-on user's HKCU, where
    the Outlook profiles live. CPUU must therefore run as a scheduled task whose principal is the
    interactive user (logon type Interactive), or, when nobody is logged on and the play allows it,
    as an at-logon task for any member of BUILTIN\Users.

    Actions: Start (register and start), Wait (poll until it is no longer running; stop it when
    -TimeoutSeconds passes), Run (Start then Wait), Status, Stop, Remove (unregister).
    Output: one hashtable describing the task (see docs/remote-scripts.md). LastTaskResult is kept
    whole: CPUU's exit code is a bit mask whose values above 255 are real.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [ValidateSet('Start', 'Wait', 'Run', 'Status', 'Stop', 'Remove')]
    [string]$Action,

    [Parameter(Mandatory = $true)]
    [string]$TaskName,

    [string]$Command,

    [string]$WorkingDirectory,

    [ValidateSet('Skip', 'AtLogon')]
    [string]$WhenNoUser = 'Skip',

    [ValidateRange(1, 604800)]
    [int]$TimeoutSeconds = 3600
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

$taskPath = '\cpuu-fleet\'
$hasNotRun = 267011     # 0x41303 SCHED_S_TASK_HAS_NOT_RUN
$usersGroupSid = 'S-1-5-32-545'
$pollSeconds = 2

function Get-FleetTask {
    Get-ScheduledTask -TaskPath $taskPath -TaskName $TaskName -ErrorAction SilentlyContinue
}

function Get-InteractiveUser {
    # The console session's user, DOMAIN\user; empty when nobody is logged on.
    $userName = (Get-CimInstance -ClassName Win32_ComputerSystem).UserName
    if ([string]::IsNullOrEmpty($userName)) {
        return $null
    }
    return [string]$userName
}

function Get-TaskReport {
    param(
        [bool]$NoUser = $false,
        [bool]$Killed = $false
    )
    $task = Get-FleetTask
    if ($null -eq $task) {
        return @{
            TaskName       = $TaskName
            Exists         = $false
            State          = 'NotFound'
            Trigger        = $null
            User           = $null
            NoUser         = $NoUser
            LastRunTime    = $null
            LastTaskResult = [int64]$hasNotRun
            Killed         = $Killed
        }
    }
    $info = Get-ScheduledTaskInfo -InputObject $task
    # A task registered without trigger was started on demand ("Now").
    $trigger = 'Now'
    if ($null -ne $task.Triggers) {
        foreach ($candidate in $task.Triggers) {
            if ($null -ne $candidate -and $candidate.CimClass.CimClassName -eq 'MSFT_TaskLogonTrigger') {
                $trigger = 'AtLogon'
            }
        }
    }
    $user = [string]$task.Principal.UserId
    if (-not [string]::IsNullOrEmpty([string]$task.Principal.GroupId)) {
        $user = 'BUILTIN\Users'
    }
    # A task that never ran reports a LastRunTime of 1999-11-30 (or none).
    $lastRunTime = $null
    if ($null -ne $info.LastRunTime -and $info.LastRunTime.Year -ge 2000) {
        $lastRunTime = $info.LastRunTime.ToUniversalTime().ToString('o')
    }
    return @{
        TaskName       = $task.TaskName
        Exists         = $true
        State          = [string]$task.State
        Trigger        = $trigger
        User           = $user
        NoUser         = $NoUser
        LastRunTime    = $lastRunTime
        LastTaskResult = [int64]$info.LastTaskResult
        Killed         = $Killed
    }
}

function Start-FleetTask {
    if ([string]::IsNullOrEmpty($Command) -or [string]::IsNullOrEmpty($WorkingDirectory)) {
        $exception = New-Object -TypeName System.ArgumentException -ArgumentList '-Command and -WorkingDirectory are required to start a task.'
        $record = New-Object -TypeName System.Management.Automation.ErrorRecord -ArgumentList @(
            $exception, 'MissingCommand', [System.Management.Automation.ErrorCategory]::InvalidArgument, $TaskName)
        $PSCmdlet.ThrowTerminatingError($record)
    }
    $user = Get-InteractiveUser
    if ($null -eq $user -and $WhenNoUser -eq 'Skip') {
        return $true
    }
    $action = New-ScheduledTaskAction -Execute $Command -WorkingDirectory $WorkingDirectory
    # The execution time limit is only a safety net for a run the engine never comes back to:
    # Wait enforces the real deadline and records the kill itself.
    $settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries `
        -MultipleInstances IgnoreNew -ExecutionTimeLimit (New-TimeSpan -Seconds ($TimeoutSeconds + 300))
    $register = @{
        TaskName = $TaskName
        TaskPath = $taskPath
        Action   = $action
        Settings = $settings
        Force    = $true
    }
    if ($null -eq $user) {
        # Nobody to run as now: run at the next logon of any member of BUILTIN\Users.
        $register['Principal'] = New-ScheduledTaskPrincipal -GroupId $usersGroupSid -RunLevel Limited
        $register['Trigger'] = New-ScheduledTaskTrigger -AtLogOn
        $null = Register-ScheduledTask @register
        return $true
    }
    $register['Principal'] = New-ScheduledTaskPrincipal -UserId $user -LogonType Interactive -RunLevel Limited
    $null = Register-ScheduledTask @register
    $null = Start-ScheduledTask -TaskPath $taskPath -TaskName $TaskName
    return $false
}

function Wait-FleetTask {
    # Returns $true when the deadline passed and the task had to be stopped.
    $deadline = [DateTime]::UtcNow.AddSeconds($TimeoutSeconds)
    while ($true) {
        $task = Get-FleetTask
        if ($null -eq $task) {
            return $false
        }
        $state = [string]$task.State
        if ($state -ne 'Running' -and $state -ne 'Queued') {
            return $false
        }
        if ([DateTime]::UtcNow -ge $deadline) {
            $null = Stop-ScheduledTask -TaskPath $taskPath -TaskName $TaskName
            return $true
        }
        Start-Sleep -Seconds $pollSeconds
    }
}

$noUser = $false
$killed = $false
switch ($Action) {
    'Start' {
        $noUser = Start-FleetTask
    }
    'Wait' {
        $killed = Wait-FleetTask
    }
    'Run' {
        $noUser = Start-FleetTask
        if (-not $noUser) {
            $killed = Wait-FleetTask
        }
    }
    'Status' {
    }
    'Stop' {
        $task = Get-FleetTask
        if ($null -ne $task -and [string]$task.State -eq 'Running') {
            $null = Stop-ScheduledTask -TaskPath $taskPath -TaskName $TaskName
            $killed = $true
        }
    }
    'Remove' {
        $task = Get-FleetTask
        if ($null -ne $task) {
            $null = Unregister-ScheduledTask -TaskPath $taskPath -TaskName $TaskName -Confirm:$false
        }
    }
}

Get-TaskReport -NoUser $noUser -Killed $killed
